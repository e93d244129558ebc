"""How domain objects look in API answers (camelCase, ISO-8601 UTC times)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flowy.db.models import App
from flowy.engine.graph import AppInput
from flowy.services.apps import AppDetail


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def app_summary(app: App) -> dict[str, Any]:
    return {
        "id": app.id,
        "title": app.title,
        "published": app.published,
        "runCount": app.run_count,
        "description": app.description,
        "createdAt": iso(app.created_at),
        "updatedAt": iso(app.updated_at),
    }


_INPUT_EXTRAS = {
    "description": "description",
    "default": "default",
    "options": "options",
    "minimum": "minimum",
    "maximum": "maximum",
    "max_length": "maxLength",
    "integer": "integer",
}


def app_input(i: AppInput) -> dict[str, Any]:
    out: dict[str, Any] = {
        "nodeId": i.node_id,
        "label": i.label,
        "kind": i.kind,
        "required": i.required,
    }
    for attr, key in _INPUT_EXTRAS.items():
        value = getattr(i.params, attr, None)
        if value is not None:
            out[key] = value
    return out


def app_detail(d: AppDetail) -> dict[str, Any]:
    return {
        **app_summary(d.app),
        "version": d.version.number,
        "versionId": d.version.id,
        "inputs": [app_input(i) for i in d.workflow.inputs],
        "outputs": [
            {"nodeId": o.node_id, "label": o.label, "outputType": o.output_type}
            for o in d.workflow.outputs
        ],
        "workflow": d.version.workflow,
    }
