"""The baseline: a bare FastAPI endpoint that reads the body and answers 202, nothing else."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/webhooks/dataverse")
async def accept(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"outcome": "accepted"}, status_code=202)
