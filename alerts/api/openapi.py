"""The OpenAPI document says what every operation can answer, errors included: each
problem status an operation can give is documented as application/problem+json, so a
client generated from the schema (and schemathesis in the tests) knows them all."""

from __future__ import annotations

from typing import Any

from ninja import NinjaAPI

from .problems import CONTENT_TYPE
from .schemas import ProblemOut

# Statuses every operation can answer: no or a bad token, a body over the limit, an
# invalid parameter or header, the token's rate limit.
EVERY = {401: "No valid API token", 413: "Body too large", 422: "Invalid input", 429: "Rate limit reached"}
# And writes: malformed JSON, a token without the scope, the alert's state forbids it
# (it needs an editor's approval, it cannot be followed up, or the same Idempotency-Key
# is still being answered).
WRITES = {400: "Malformed body", 403: "The token lacks the scope",
          409: "Conflict with the alert's state, or it needs an editor's approval"}
WITH_ID = {404: "No such alert"}


class ProblemDocumentedAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation) -> str:
        return operation.view_func.__name__  # alert_create, alert_read, ...

    def get_openapi_schema(self, *args: Any, **kwargs: Any):
        schema = super().get_openapi_schema(*args, **kwargs)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
        for methods in schema.get("paths", {}).values():
            for method, operation in methods.items():
                statuses = dict(EVERY)
                if method == "post":
                    statuses |= WRITES
                if any(param.get("in") == "path" for param in operation.get("parameters", [])):
                    statuses |= WITH_ID
                responses = operation.setdefault("responses", {})
                for status, description in sorted(statuses.items()):
                    responses.setdefault(str(status), {"description": description, "content": {
                        CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}})
        return schema
