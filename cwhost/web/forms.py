"""Forms judged by the API's own schemas: their messages, one sentence a field, for the page to show beside it."""

from __future__ import annotations

from cwhost.api.common import client_names
from cwhost.errors import ServiceError


def field_errors(messages) -> dict[str, str]:
    """marshmallow's messages (nested ones flattened: configuration.cpuCores → cpuCores) by form field;
    messages about the whole body go under ``""``."""
    if not isinstance(messages, dict):
        return {"": " ".join(str(message) for message in messages)}
    flat: dict[str, str] = {}
    for key, value in messages.items():
        if isinstance(value, dict):
            flat.update(field_errors(value))
        else:
            flat[str(key)] = " ".join(str(message) for message in value)
    return flat


def service_errors(error: ServiceError) -> dict[str, str]:
    """A refusal of the domain's as the form shows it: its message, and its fields' as the API names them."""
    return {"": error.message, **field_errors(client_names(error.details or {}))}


def form_number(text: str):
    """A form's whole number as the JSON body would carry it; anything else as typed, for the schema to refuse."""
    try:
        return int(text.strip())
    except ValueError:
        return text
