"""Development-only mailbox: lists the .eml files EmlFileBackend wrote. Only routed
when DEBUG is on (config/urls.py)."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render


def _mail_dir() -> Path:
    return Path(settings.EMAIL_FILE_PATH)


def _load(name: str) -> email.message.EmailMessage:
    path = _mail_dir() / name
    if "/" in name or not name.endswith(".eml") or not path.is_file():
        raise Http404("No such message")
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def mailbox(request: HttpRequest) -> HttpResponse:
    files = sorted(_mail_dir().glob("*.eml"), reverse=True)[:200] if _mail_dir().is_dir() else []
    messages = []
    for path in files:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        messages.append({"name": path.name, "to": msg["To"], "subject": msg["Subject"], "date": msg["Date"]})
    return render(request, "alerts/dev_mailbox.html", {"messages": messages})


def message_html(request: HttpRequest, name: str) -> HttpResponse:
    msg = _load(name)
    part = msg.get_body(preferencelist=("html", "plain"))
    body = part.get_content() if part else ""
    if part is not None and part.get_content_type() == "text/plain":
        return HttpResponse(body, content_type="text/plain; charset=utf-8")
    return HttpResponse(body)


def message_raw(request: HttpRequest, name: str) -> FileResponse:
    _load(name)
    return FileResponse(open(_mail_dir() / name, "rb"), content_type="message/rfc822")
