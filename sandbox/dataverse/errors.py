"""Dataverse's error shape: `{"error": {"code": "0x…", "message": "…"}}` with the HTTP status it pairs with."""

from __future__ import annotations

from fastapi.responses import JSONResponse

NOT_FOUND = "0x80040217"          # "<table> With Id = <id> Does Not Exist"
BAD_PAYLOAD = "0x80048d19"        # unknown column / wrong value type in a request body
BAD_QUERY = "0x80060888"          # unknown column in $select/$filter/$orderby, syntax errors, $skip
ROW_VERSION = "0x80060882"        # If-Match version mismatch (412)
DUPLICATE = "0x80040237"          # the record already exists (If-None-Match: * or a POST with a used id)
INVALID_ARGUMENT = "0x80040203"   # rule violations: state changes, read-only records, missing columns
THROTTLED = "0x80072322"          # service protection: number of requests
NOT_MEMBER = "0x80072560"         # token valid but no systemuser for the application
UNEXPECTED = "0x80040216"         # injected 5xx faults


class DataverseError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"code": self.code, "message": self.message}}
        return JSONResponse(body, status_code=self.status, headers={"OData-Version": "4.0", **self.headers})


def not_found(logical: str, record_id: str) -> DataverseError:
    return DataverseError(404, NOT_FOUND, f"{logical} With Id = {record_id} Does Not Exist")


def unknown_property(logical: str, name: str) -> DataverseError:
    return DataverseError(
        400, BAD_PAYLOAD,
        f"Error identified in Payload provided by the user for Entity :'{logical}', For more information on "
        f"this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ----> "
        f"InnerException : Microsoft.OData.ODataException: The property '{name}' does not exist on type "
        f"'Microsoft.Dynamics.CRM.{logical}'. Make sure to only use property names that are defined by the type "
        f"or mark the type as open type.",
    )


def undeclared_property(entity_set: str, name: str) -> DataverseError:
    """A bind whose navigation name the type does not declare, or declares in another case ("Troubleshoot
    Dataverse Web API client errors": "This error occurs when an invalid navigation property name is sent")."""
    return DataverseError(
        400, BAD_PAYLOAD,
        f"Error identified in Payload provided by the user for Entity :'{entity_set}', For more information on "
        f"this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ----> "
        f"InnerException : Microsoft.OData.ODataException: An undeclared property '{name}' which only has "
        f"property annotations in the payload but no property value was found in the payload. In OData, only "
        f"declared navigation properties and declared named streams can be represented as properties without "
        f"values.",
    )


def bad_query(message: str) -> DataverseError:
    return DataverseError(400, BAD_QUERY, message)


def no_property(logical: str, name: str) -> DataverseError:
    return no_property_of(logical, name)


def no_property_of(type_name: str, name: str) -> DataverseError:
    return bad_query(f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{type_name}'.")


def invalid(message: str) -> DataverseError:
    return DataverseError(400, INVALID_ARGUMENT, message)
