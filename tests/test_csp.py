"""The site-wide Content-Security-Policy, and the sandboxed policy of the admin's
email preview."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User

from alerts.models import Alert

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict((part.strip().split(" ", 1) + [""])[:2] for part in header.split(";") if part.strip())


@pytest.mark.parametrize("path", ["/", "/embed/", "/privacy/", "/preferences/", "/admin/login/",
                                  "/u/not-a-token/"])
def test_every_page_has_a_policy_that_allows_only_our_own_scripts_and_styles(client, path):
    directives = policy(client.get(path))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["base-uri"] == "'none'"
    expected = "'self'" if path == "/embed/" else "'none'"
    assert directives["frame-ancestors"] == expected


def test_the_admins_own_pages_have_the_policy_too(admin_client):
    alert = Alert.objects.create(headline="Storm")
    for path in ["/admin/", f"/admin/alerts/alert/{alert.pk}/change/", f"/admin/alerts/alert/{alert.pk}/preview/"]:
        assert policy(admin_client.get(path))["script-src"] == "'self'", path


def test_our_templates_have_no_inline_script_or_style_the_policy_would_block():
    pages = [*ROOT.glob("templates/alerts/*.html"), *ROOT.glob("templates/admin/**/*.html"),
             ROOT / "templates/base.html"]
    for page in pages:
        text = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), page
        assert not re.search(r"\sstyle=\"|<style", text), page
        assert not re.search(r"\son[a-z]+=\"", text), page


def test_the_email_preview_is_sandboxed_with_its_own_policy(client):
    alert = Alert.objects.create(headline="<script>alert(1)</script> Storm", image_url="https://img.example/x.jpg")
    editor = User.objects.create_user("writer", "w@news.example.com", "pw", is_staff=True)
    editor.user_permissions.set(Permission.objects.filter(codename__in=["view_alert", "change_alert"]))
    client.force_login(editor)
    response = client.get(f"/admin/alerts/alert/{alert.pk}/preview/html/")
    directives = policy(response)
    assert "sandbox" in directives and directives["default-src"] == "'none'"
    assert "script-src" not in directives  # falls back to default-src 'none'
    assert directives["img-src"] == "https: data:"
    page = client.get(f"/admin/alerts/alert/{alert.pk}/preview/").content.decode()
    assert page.count("<iframe") == page.count(" sandbox ") == 2
