from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from catalog.model import SKU
from service.auth.deps import require
from service.auth.service import Principal
from service.kit.config import get_settings
from service.kit.db.engine import new_session, transaction
from service.kit.http.csv_body import NotCsv, csv_request_body, csv_upload, media_type
from service.kit.http.errors import responses
from service.kit.http.strict import reject_unknown_query
from service.kit.observability.metrics import CODES_IMPORTED
from service.pools import service
from service.pools.errors import NotACodeProduct
from service.pools.schemas import CodeUploadResult, StockOut

router = APIRouter(
    prefix="/v1", tags=["partners"], responses=responses(), dependencies=[Depends(reject_unknown_query)]
)
log = structlog.get_logger("pools")

_UPLOAD_BODY = csv_request_body(
    "code,pin,expires_at\nABC-123-XYZ,1234,2027-12-31\n",
    "code[,pin][,expires_at], with or without a header line",
    **{
        "application/json": {
            "schema": {"$ref": "#/components/schemas/CodeUploadJson"},
            "example": {
                "codes": [{"code": "ABC-123-XYZ", "pin": "1234", "expires_at": "2027-12-31"}, "DEF-456"]
            },
        }
    },
)


@router.post(
    "/products/{sku}/codes",
    response_model=CodeUploadResult,
    status_code=201,
    summary="Upload codes into a product's pool (CSV or JSON)",
    openapi_extra=_UPLOAD_BODY,
    responses=responses(NotACodeProduct, NotCsv),
)
async def upload_codes(
    request: Request,
    sku: Annotated[str, Path(pattern=SKU, description="Product sku")],
    principal: Principal = Depends(require("partner")),
) -> CodeUploadResult:
    upload = await csv_upload(request)  # text/csv, or the `file` part of multipart/form-data
    body = upload if upload is not None else await request.body()
    lines = service.lines_from_body(body, "text/csv" if upload is not None else media_type(request))

    def run() -> service.ImportResult:
        with transaction() as session:
            return service.import_codes(
                session,
                sku,
                lines,
                source="api",
                sha256=service.body_sha256(body),
                api_key_id=principal.api_key_id,
                partner=principal.partner if principal.role == "partner" else None,
            )

    result = await run_in_threadpool(run)
    CODES_IMPORTED.labels(sku=sku).inc(result.accepted)
    log.info(
        "codes_uploaded",
        sku=sku,
        upload_id=result.upload_id,
        lines=result.lines,
        accepted=result.accepted,
        duplicates=result.duplicates,
        rejected=result.rejected,
        key_id=principal.key_id,
    )
    return CodeUploadResult(**asdict(result))


@router.get(
    "/stock",
    response_model=StockOut,
    tags=["operations"],
    summary="Per sku: available, reserved, issued, expiring soon, low-stock flag",
)
def get_stock(principal: Principal = Depends(require("partner", "support"))) -> StockOut:
    settings = get_settings()
    with new_session() as session:
        lines = service.stock(
            session,
            partner=principal.partner if principal.role == "partner" else None,
            expiring_days=settings.stock_expiring_days,
            default_threshold=settings.stock_low_threshold,
        )
    return StockOut(items=[asdict(line) for line in lines])
