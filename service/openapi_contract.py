"""What the generated OpenAPI document states beyond what FastAPI derives: each operation's
`operationId` (named here, in one table), one bearer security scheme per role with each operation's
allowed roles, the links between operations (a redemption to its reading, cancelling and resending; a
card verification to its exchange), and an example request and success response for every
operation."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts

from service.auth.openapi import BEARER, security, security_schemes

# The operationId of every operation, by its route function's name: what a generated client calls
# its methods (createRedemption, not FastAPI's create_redemption_v1_redemptions_post). A new route is
# named here; tests/test_contract.py fails for one that is not.
OPERATION_IDS: dict[str, str] = {
    "healthz": "checkLiveness",
    "readyz": "checkReadiness",
    "get_programs": "listPrograms",
    "get_program": "getProgram",
    "get_offers": "listOffers",
    "get_products": "listProducts",
    "upload_codes": "uploadCodes",
    "get_stock": "getStock",
    "create_redemption": "createRedemption",
    "list_redemptions": "listRedemptions",
    "read_redemption": "getRedemption",
    "subscriber_redemptions": "listSubscriberRedemptions",
    "cancel_redemption": "cancelRedemption",
    "resend_redemption": "resendRedemption",
    "export_records": "exportRecords",
    "get_period": "getPeriod",
    "close_period": "closePeriod",
    "list_documents": "listPeriodDocuments",
    "download_document": "downloadPeriodDocument",
    "reconcile": "reconcilePartnerActivations",
    "receive_receipt": "receiveSmsReceipt",
    "list_webhook_events": "listWebhookEvents",
    "replay_webhook_event": "replayWebhookEvent",
    "verify_card": "verifyCard",
    "create_exchange": "createCardExchange",
    "read_card": "getCard",
    "block_card": "blockCard",
    "unblock_card": "unblockCard",
    "unlock_card": "unlockCard",
    "read_settlement": "getSettlement",
    "create_campaign": "createCampaign",
    "list_campaigns": "listCampaigns",
    "read_campaign": "getCampaign",
    "change_campaign": "updateCampaign",
    "upload_lines": "uploadCampaignLines",
    "download_report": "downloadCampaignReport",
    "download_results": "downloadCampaignResults",
    "submit_campaign": "submitCampaign",
    "approve_campaign": "approveCampaign",
    "reject_campaign": "rejectCampaign",
    "pause_campaign": "pauseCampaign",
    "resume_campaign": "resumeCampaign",
    "cancel_campaign": "cancelCampaign",
    "add_opt_outs": "addBulkOptOuts",
    "remove_opt_outs": "removeBulkOptOuts",
}


def operation_id(route: APIRoute) -> str:
    """FastAPI's generate_unique_id_function: the table's name for the route, else its function's
    name in camelCase (pages that are not in the document; a test holds the document to the table)."""
    named = OPERATION_IDS.get(route.name)
    if named is not None:
        return named
    head, *rest = route.name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _roles_of(dependant: Any) -> frozenset[str] | None:
    roles = getattr(dependant.call, "roles", None)
    if roles is not None:
        return frozenset(roles)
    for sub in dependant.dependencies:
        found = _roles_of(sub)
        if found is not None:
            return found
    return None


def _operation_ids(paths: dict[str, Any]) -> dict[tuple[str, str], str]:
    ids = {
        (method.upper(), path): operation["operationId"]
        for path, item in paths.items()
        for method, operation in item.items()
        if "operationId" in operation
    }
    if len(set(ids.values())) != len(ids):
        twice = sorted({name for name in ids.values() if list(ids.values()).count(name) > 1})
        raise RuntimeError(f"operationId used by more than one operation: {twice}")
    return ids


def _redemption_links(ids: dict[tuple[str, str], str]) -> dict[str, Any]:
    by_id = {"redemption_id": "$response.body#/id"}
    return {
        "GetRedemption": {
            "operationId": ids[("GET", "/v1/redemptions/{redemption_id}")],
            "parameters": by_id,
            "description": "This redemption as it is now",
        },
        "CancelRedemption": {
            "operationId": ids[("POST", "/v1/redemptions/{redemption_id}/cancel")],
            "parameters": by_id,
            "description": "Cancel it while nobody could have used the reward",
        },
        "ResendRedemption": {
            "operationId": ids[("POST", "/v1/redemptions/{redemption_id}/resend")],
            "parameters": by_id,
            "description": "Send its SMS again",
        },
    }


def finish(document: dict[str, Any], routes: list[Any]) -> dict[str, Any]:
    """Role security and links, in place; returns the document."""
    components = document.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    schemes.pop(BEARER, None)
    schemes.update(security_schemes())
    paths = document.get("paths", {})
    for route in iter_route_contexts(routes):
        path, dependant = getattr(route, "path_format", None), getattr(route, "dependant", None)
        if path not in paths or dependant is None:
            continue
        roles = _roles_of(dependant)
        for method in getattr(route, "methods", None) or ():
            operation = paths[path].get(method.lower())
            if operation is None or {BEARER: []} not in operation.get("security", []):
                continue
            explicit = [entry for entry in operation["security"] if entry != {BEARER: []}]
            if explicit:  # the route states its security itself (openapi_extra): that stands
                operation["security"] = explicit
                continue
            if roles is None:
                raise RuntimeError(f"{method} {path} authenticates but names no roles (use require())")
            operation["security"] = security(*roles)
    ids = _operation_ids(paths)
    links = _redemption_links(ids)
    paths["/v1/redemptions"]["post"]["responses"]["201"]["links"] = links
    paths["/v1/redemptions/{redemption_id}"]["get"]["responses"]["200"]["links"] = links
    paths["/v1/cards/verify"]["post"]["responses"]["200"]["links"] = {
        "ExchangeCard": {
            "operationId": ids[("POST", "/v1/cards/exchanges")],
            "requestBody": {
                "number": "$request.body#/number",
                "pin": "$request.body#/pin",
                "sku": "$response.body#/products/0/sku",
            },
            "description": "Exchange the verified card for the first of the products it may buy",
        }
    }
    _add_examples(paths, components.get("schemas", {}))
    return document


# --- examples ---------------------------------------------------------------------------------------

# Values of the demo catalog (catalog/demo) for the names the API uses, so that every example request
# names things that exist; anything else is derived from the schema (its examples, enum, format).
_NAMED: dict[str, Any] = {
    "program": "mobile-bonus",
    "tariff": "basic",
    "offer": "cinema-2000",
    "sku": "ARAY-CINEMA-2000",
    "partner": "aray-cinema",
    "msisdn": "+77011234567",
    "month": "2026-03",
    "period": "2026-03",
    "external_id": "order-10001",
    "currency": "KZT",
    "last4": "4567",
    "Idempotency-Key": "order-10001-redeem",
    "timezone": "Asia/Almaty",
    "sms_sender": "QazaqBonus",
    "points": 2000,
    "resend_count": 0,
    "next_cursor": None,
    "status_reason": None,
}
_FORMATS = {
    "date-time": "2026-03-01T10:00:00Z",
    "date": "2026-03-01",
    "uuid": "0b9f2a52-7c1e-4d2b-9a53-3f6e1c2d8b10",
    "uri": "https://loyalty.example.kz/hooks/rewards",
}


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def example_of(
    schema: dict[str, Any], components: dict[str, Any], name: str | None = None, depth: int = 0
) -> Any:
    """A value the schema allows, for the document's examples: the schema's own example when it has
    one, a demo-catalog value for a known name, else one built from its type, enum and format."""
    schema = _resolve(schema, components)
    if "examples" in schema and schema["examples"]:
        return schema["examples"][0]
    if "example" in schema:
        return schema["example"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if name in _NAMED:
        return _NAMED[name]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, components).get("type") != "null"]
            return example_of(options[0], components, name, depth) if options else None
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if depth > 6:
            return {}
        return {
            prop: example_of(sub, components, prop, depth + 1)
            for prop, sub in schema.get("properties", {}).items()
        }
    if kind == "array":
        return [example_of(schema.get("items", {}), components, name, depth + 1)]
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return max(low, 1) if schema.get("maximum", 1) >= 1 else low
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "string":
        return _FORMATS.get(schema.get("format", ""), "string")
    return None


def _add_examples(paths: dict[str, Any], components: dict[str, Any]) -> None:
    """An example request (required parameters, JSON body) and a success response per operation."""
    for item in paths.values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("required") and "example" not in parameter:
                    parameter["example"] = example_of(parameter["schema"], components, parameter["name"])
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and "example" not in body and "examples" not in body:
                body["example"] = example_of(body["schema"], components)
            for status, response in operation.get("responses", {}).items():
                media = response.get("content", {}).get("application/json")
                if status.startswith("2") and media is not None and "example" not in media:
                    if media.get("schema"):
                        media["example"] = example_of(media["schema"], components)
