"""A realistic, deterministic data set written straight into the store (no webhooks: it is data that
"was already there"). 10,000 customers and 10,000 items take a few seconds at most."""

from __future__ import annotations

import random
import uuid
from typing import Any

from sandbox.bc.entities import ENTITIES
from sandbox.bc.records import Records

FIRST = ["Anna", "Ben", "Carla", "David", "Elena", "Frank", "Grace", "Hugo", "Ines", "Jon", "Karin", "Luis",
         "Maria", "Nils", "Olga", "Paul", "Rita", "Sven", "Tara", "Uwe", "Vera", "Walt", "Yara", "Zoe"]
LAST = ["Adams", "Berger", "Costa", "Dietrich", "Evans", "Fischer", "Garcia", "Hansen", "Ivanova", "Jensen",
        "Keller", "Larsen", "Moreau", "Novak", "Olsen", "Petrov", "Quinn", "Rossi", "Schmidt", "Turner"]
COMPANY_A = ["Adatum", "Alpine", "Blue Yonder", "Coho", "Contoso", "Fabrikam", "Litware", "Northwind",
             "Proseware", "Tailspin", "Trey", "Wide World", "Woodgrove", "Relecloud", "Lamna", "Fourth Coffee"]
COMPANY_B = ["Corporation", "Trading", "Industries", "Logistics", "Retail", "Systems", "Supplies", "Group",
             "Partners", "Manufacturing"]
CITIES = [("Seattle", "WA", "US", "98101"), ("Chicago", "IL", "US", "60601"), ("Atlanta", "GA", "US", "30301"),
          ("Toronto", "ON", "CA", "M5H 2N2"), ("London", "", "GB", "EC1A 1BB"), ("Berlin", "", "DE", "10115"),
          ("Copenhagen", "", "DK", "1050"), ("Mexico City", "", "MX", "01000")]
CURRENCIES = [("EUR", "Euro", "€"), ("GBP", "Pound Sterling", "£"), ("CAD", "Canadian Dollar", "$"),
              ("DKK", "Danish Krone", "kr"), ("MXN", "Mexican Peso", "$")]
UNITS = [("PCS", "Piece", "EA"), ("BOX", "Box", "BX"), ("HOUR", "Hour", "HUR"), ("KG", "Kilo", "KGM"),
         ("SET", "Set", "SET"), ("PACK", "Pack", "PK")]
PRODUCTS = ["Desk", "Chair", "Lamp", "Cabinet", "Monitor", "Keyboard", "Table", "Shelf", "Printer", "Router",
            "Headset", "Whiteboard", "Projector", "Sofa", "Locker"]
ADJECTIVES = ["Athens", "Berlin", "Paris", "Rome", "London", "Oslo", "Madrid", "Vienna", "Lisbon", "Prague"]


class Seeder:
    def __init__(self, records: Records, seed: int = 42, custom_api: bool = True) -> None:
        self.records, self.store = records, records.store
        self.rnd = random.Random(seed)  # noqa: S311 - demo data, not security
        self.custom_api = custom_api  # without the bcsync extension: no resources, price groups or prices

    def _put(self, name: str, **values: Any) -> dict[str, Any]:
        entity = ENTITIES[name]
        rows = self.store.table(name).rows
        row_id = str(uuid.UUID(int=self.rnd.getrandbits(128), version=4))
        while row_id in rows:  # a second seed with the same seed number: same sequence, new ids
            row_id = str(uuid.UUID(int=self.rnd.getrandbits(128), version=4))
        data = {**entity.fields, **values, "id": row_id}
        if entity.unique == "number" and not data.get("number"):
            assert entity.number_prefix
            data["number"] = self.store.next_number(entity.number_prefix)
        self.store.put(name, data, change=None)
        return data

    def _code(self, name: str, code: str) -> dict[str, Any] | None:
        row = self.records.by_code(name, code)
        return row.data if row else None

    def run(self, spec: dict[str, Any]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for code, name, symbol in CURRENCIES:
            if not self._code("currencies", code):
                self._put("currencies", code=code, displayName=name, symbol=symbol)
                counts["currencies"] = counts.get("currencies", 0) + 1
        for code, name, iso in UNITS:
            if not self._code("unitsOfMeasure", code):
                self._put("unitsOfMeasure", code=code, displayName=name, internationalStandardCode=iso,
                          symbol=code.lower())
                counts["unitsOfMeasure"] = counts.get("unitsOfMeasure", 0) + 1
        people = [self._salesperson() for _ in range(int(spec.get("salespeople", 5)))]
        counts["salespeoplePurchasers"] = len(people)
        codes = [p["code"] for p in people] or [
            r.data["code"] for r in self.store.table("salespeoplePurchasers").rows.values()]
        per_customer = int(spec.get("contactsPerCustomer", 1))
        for _ in range(int(spec.get("customers", 0))):
            self._customer(codes, per_customer)
        counts["customers"] = int(spec.get("customers", 0))
        counts["contacts"] = counts["customers"] * (1 + per_customer)
        items = [self._item() for _ in range(int(spec.get("items", 0)))]
        counts["items"] = len(items)
        if not self.custom_api:
            return counts
        counts["resources"] = len([self._resource() for _ in range(int(spec.get("resources", 0)))])
        groups = [self._price_group(i) for i in range(int(spec.get("priceGroups", 0)))]
        counts["customerPriceGroups"] = len(groups)
        prices = 0
        for group in groups:
            for item in self.rnd.sample(items, min(len(items), int(spec.get("pricesPerGroup", 10)))):
                self._put("salesPrices", itemId=item["id"], customerPriceGroupCode=group["code"],
                          currencyCode=group["currencyCode"], unitOfMeasureCode=item["baseUnitOfMeasureCode"],
                          unitPrice=round(item["unitPrice"] * self.rnd.uniform(0.8, 0.95), 2),
                          minimumQuantity=float(self.rnd.choice([0, 1, 10])), status="Active")
                prices += 1
        counts["salesPrices"] = prices
        return counts

    def _salesperson(self) -> dict[str, Any]:
        first, last = self.rnd.choice(FIRST), self.rnd.choice(LAST)
        code, n = first[0] + last[0], 1
        while self._code("salespeoplePurchasers", code):
            n += 1
            code = f"{first[0]}{last[0]}{n}"
        return self._put("salespeoplePurchasers", code=code, displayName=f"{first} {last}",
                         email=f"{first}.{last}@cronus.example".lower(), phoneNo=self._phone(),
                         jobTitle=self.rnd.choice(["Sales Manager", "Account Manager", "Sales Rep"]))

    def _phone(self) -> str:
        return f"+1 425 555 {self.rnd.randint(1000, 9999)}"

    def _customer(self, salespeople: list[str], persons: int) -> None:
        name = f"{self.rnd.choice(COMPANY_A)} {self.rnd.choice(COMPANY_B)}"
        city, state, country, postal = self.rnd.choice(CITIES)
        domain = name.lower().replace(" ", "") + ".example"
        currency = self.rnd.choice(["", "", "", "EUR", "GBP", "CAD"])
        cur = self._code("currencies", currency) if currency else None
        address = {"addressLine1": f"{self.rnd.randint(1, 999)} Main Street", "city": city, "state": state,
                   "country": country, "postalCode": postal}
        customer = self._put(
            "customers", displayName=name, **address, phoneNumber=self._phone(), email=f"info@{domain}",
            website=f"www.{domain}", salespersonCode=self.rnd.choice(salespeople) if salespeople else "",
            creditLimit=float(self.rnd.choice([0, 5000, 10000, 25000])), taxLiable=country == "US",
            currencyCode=currency, currencyId=cur["id"] if cur else ENTITIES["customers"].fields["currencyId"],
        )
        number = self.store.next_number("CT")  # a Company contact is its own company (Company No. = No.)
        company = self._put("contacts", type="Company", number=number, displayName=name, companyNumber=number,
                            companyName=name, contactBusinessRelation="Customer", searchName=name.upper(),
                            **address, phoneNumber=customer["phoneNumber"], email=customer["email"],
                            website=customer["website"])
        self.store.link_contact(customer["id"], company["id"])
        for _ in range(persons):
            first, last = self.rnd.choice(FIRST), self.rnd.choice(LAST)
            self._put("contacts", type="Person", displayName=f"{first} {last}",
                      companyNumber=company["number"], companyName=name, searchName=f"{first} {last}".upper(),
                      **address, email=f"{first}.{last}@{domain}".lower(), phoneNumber=self._phone(),
                      mobilePhoneNumber=self._phone())

    def _item(self) -> dict[str, Any]:
        service = self.rnd.random() < 0.1
        unit = self._code("unitsOfMeasure", "HOUR" if service else self.rnd.choice(["PCS", "BOX", "SET"]))
        assert unit is not None
        cost = round(self.rnd.uniform(5, 500), 2)
        name = ("Consulting " + self.rnd.choice(["Hour", "Day", "Setup"]) if service
                else f"{self.rnd.choice(ADJECTIVES)} {self.rnd.choice(PRODUCTS)}")
        return self._put("items", displayName=name, type="Service" if service else "Inventory",
                         inventory=0.0 if service else float(self.rnd.randint(0, 500)), unitCost=cost,
                         unitPrice=round(cost * self.rnd.uniform(1.2, 1.8), 2),
                         baseUnitOfMeasureId=unit["id"], baseUnitOfMeasureCode=unit["code"],
                         gtin="" if service else str(self.rnd.randint(10**12, 10**13 - 1)),
                         itemCategoryCode="" if service else "FURNITURE")

    def _resource(self) -> dict[str, Any]:
        first, last = self.rnd.choice(FIRST), self.rnd.choice(LAST)
        cost = float(self.rnd.choice([40, 60, 80]))
        return self._put("resources", displayName=f"{first} {last}", baseUnitOfMeasureCode="HOUR",
                         unitCost=cost, unitPrice=cost * 2)

    def _price_group(self, index: int) -> dict[str, Any]:
        names = ["RETAIL", "WHOLESALE", "EXPORT", "VIP", "PARTNER"]
        code = names[index] if index < len(names) else f"GROUP{index + 1}"
        if existing := self._code("customerPriceGroups", code):
            return existing
        return self._put("customerPriceGroups", code=code, description=code.title() + " prices",
                         currencyCode="EUR" if code == "EXPORT" else "")
