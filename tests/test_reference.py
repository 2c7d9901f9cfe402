"""The generated reference pages (docs/configuration.md, docs/http-reference.md) match the code."""

from ragft.service.app.reference import DOCS, http_reference, pages, settings_reference


def test_committed_reference_pages_are_what_the_code_renders():
    stale = [path.name for path, text in pages().items() if not path.is_file() or path.read_text() != text]
    assert not stale, f"{', '.join(stale)} out of date: run `make docs` and commit the result"


def test_every_setting_and_route_is_on_its_page():
    from ragft.service.settings import Settings

    config = settings_reference()
    for group, field in Settings.model_fields.items():
        names = getattr(field.annotation, "model_fields", {group: None})
        for name in names:
            assert f"`{group}.{name}`" in config or f"`{name}`" in config
    http = http_reference({"paths": {"/v1/x": {"get": {"summary": "X.", "responses": {"200": {}, "422": {}}}}}})
    assert "## `GET /v1/x`" in http and "- answers: 200, 422" in http
    assert (DOCS / "http-reference.md").read_text().count("## `") >= 30


def test_readme_is_short_and_every_local_link_resolves():
    import re

    root = DOCS.parent
    readme = (root / "README.md").read_text()
    assert len(readme.splitlines()) <= 300, "the README is for a reader with five minutes: move detail to docs/"
    broken = []
    for page in [root / "README.md", root / "corpora" / "README.md", *DOCS.rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(root)} -> {target}")
    assert not broken, broken
