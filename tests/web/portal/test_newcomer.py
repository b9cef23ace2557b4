"""What a newcomer trips over in the portal: the way in, the CGAU, confirmations, dates,
error pages in the portal's layout, headings and text contrast."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from releves_mailer.db.models import OutboxMessage, Redevable
from releves_mailer.render import Renderer
from releves_mailer.resources import templates_dir
from tests.web.portal.conftest import PortalHarness, csrf_of

pytestmark = pytest.mark.once

HEADING = re.compile(r"<h([1-6])\b")


async def outbox_count(portal: PortalHarness) -> int:
    async with portal.database.session() as session:
        return int(await session.scalar(select(func.count(OutboxMessage.id))) or 0)


async def test_the_site_address_leads_to_the_login_form(portal: PortalHarness) -> None:
    async with portal.client() as client:
        root = await client.get("/")
        assert root.status_code == 302 and root.headers["location"] == "/portail/"
        home = await client.get("/portail/")
        assert home.headers["location"].startswith("/portail/connexion")
        form = await client.get(home.headers["location"])
        assert 'id="login"' in form.text and 'id="password"' in form.text


async def test_cgau_page_linked_where_they_are_accepted(portal: PortalHarness) -> None:
    async with portal.client() as client:
        terms = await client.get("/portail/cgau")  # readable before logging in
        assert terms.status_code == 200
        assert "<h1>Conditions Générales d'Adhésion et d'Utilisation</h1>" in terms.text
        assert "Aucun identifiant bancaire" in terms.text
        assert "ne sont jamais envoyés sur des adresses externes au portail" in terms.text
    async with portal.logged_in("cabinet") as client:
        subscription = await client.get("/portail/souscription")
        assert '<a href="/portail/cgau" id="lien-cgau">' in subscription.text


def test_cgau_text_is_an_overridable_template(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "cgau_texte.html").write_text(
        "<h2>Nos conditions</h2><p>Texte du cabinet {{ portal_name }}.</p>", encoding="utf-8"
    )
    context = {
        "title": "CGAU",
        "portal_name": "Portail X",
        "support_email": "",
        "support_phone": "",
    }
    page = Renderer(tmp_path).render_page("cgau", context)
    assert "Texte du cabinet Portail X." in page and "Aucun identifiant bancaire" not in page
    shipped = Renderer().render_page("cgau", context)
    assert "Aucun identifiant bancaire" in shipped
    assert (templates_dir() / "web" / "cgau_texte.html").is_file()


async def test_deactivating_a_redevable_asks_first(portal: PortalHarness) -> None:
    redevable = portal.primary.redevable_ids[0]
    async with portal.logged_in("cabinet") as client:
        listing = await client.get("/portail/redevables")
        # The list offers a link to the question, not a button that acts at once.
        assert f'href="/portail/redevables/{redevable}/desactiver?retour=' in listing.text
        assert f'action="/portail/redevables/{redevable}/desactiver"' not in listing.text
        question = await client.get(f"/portail/redevables/{redevable}/desactiver")
        assert question.status_code == 200
        assert "Voulez-vous vraiment désactiver le redevable SOCIETE 10" in question.text
        assert "Annuler" in question.text
        async with portal.database.session() as session:
            stored = await session.get(Redevable, redevable)
            assert stored is not None and stored.active  # asking changed nothing
        done = await client.post(
            f"/portail/redevables/{redevable}/desactiver",
            data={"csrf": csrf_of(question.text), "retour": "/portail/redevables"},
        )
        assert done.status_code == 303
    async with portal.database.session() as session:
        stored = await session.get(Redevable, redevable)
        assert stored is not None and not stored.active


async def test_sending_a_link_asks_first(portal: PortalHarness) -> None:
    redevable = portal.primary.redevable_ids[0]
    account = portal.primary.bank_account_ids[0]
    async with portal.logged_in("cabinet") as client:
        detail = await client.get(f"/portail/redevables/{redevable}")
        assert f'href="/portail/redevables/{redevable}/lien"' in detail.text
        for url, words in (
            (f"/portail/redevables/{redevable}/lien", "ajoute ses comptes bancaires"),
            (f"/portail/comptes/{account}/lien", "mette à jour les identifiants"),
        ):
            question = await client.get(url)
            assert question.status_code == 200
            assert "client10@example.com" in question.text and words in question.text
            assert await outbox_count(portal) == 0
        sent = await client.post(
            f"/portail/redevables/{redevable}/lien", data={"csrf": csrf_of(question.text)}
        )
        assert sent.status_code == 303
    assert await outbox_count(portal) == 1


async def test_dates_and_a_period_that_ends_before_it_starts(portal: PortalHarness) -> None:
    async with portal.logged_in("cabinet") as client:
        listing = await client.get("/portail/releves")
        periods = re.findall(r"<td>(\S+) au (\S+)</td>", listing.text)
        assert len(periods) == 3
        assert all(re.fullmatch(r"\d\d/\d\d/\d{4}", day) for pair in periods for day in pair)
        backwards = await client.get("/portail/releves?du=2026-03-10&au=2026-03-01")
        assert backwards.status_code == 400
        assert "La date « au » (01/03/2026) est antérieure à la date « du » (10/03/2026)" in (
            backwards.text
        )
        account = await client.get(f"/portail/comptes/{portal.primary.bank_account_ids[0]}")
        assert "<b>Type :</b> Compte courant" in account.text


async def test_error_pages_keep_the_portal_layout(portal: PortalHarness) -> None:
    async with portal.logged_in("cabinet") as client:
        missing = await client.get("/portail/nulle-part")
        assert missing.status_code == 404
        assert 'nav class="menu"' in missing.text and "Page introuvable" in missing.text
        assert 'href="/portail/"' in missing.text
        other = await client.get(f"/portail/redevables/{portal.other.redevable_ids[0]}")
        assert other.status_code == 404 and 'nav class="menu"' in other.text
        page = await client.get("/portail/releves")
        empty = await client.post("/portail/releves/zip", data={"csrf": csrf_of(page.text)})
        assert empty.status_code == 400
        assert 'nav class="menu"' in empty.text
        assert "Aucun relevé sélectionné" in empty.text
        wrong_method = await client.get("/portail/deconnexion")
        assert wrong_method.status_code == 405 and 'nav class="menu"' in wrong_method.text
    async with portal.client() as client:
        anonymous = await client.get("/portail/cgau/nulle-part")
        assert anonymous.status_code == 404 and "Page introuvable" in anonymous.text
        assert 'nav class="menu"' not in anonymous.text  # no user, no menu


@pytest.mark.parametrize(
    "path",
    [
        "/portail/",
        "/portail/redevables",
        "/portail/redevables/nouveau",
        "/portail/redevables/import",
        "/portail/redevables/{redevable}",
        "/portail/redevables/{redevable}?onglet=jetons",
        "/portail/redevables/{redevable}/desactiver",
        "/portail/comptes",
        "/portail/comptes/{account}",
        "/portail/comptes/{account}/desactiver",
        "/portail/releves",
        "/portail/releves/{statement}",
        "/portail/souscription",
        "/portail/mon-compte",
        "/portail/nulle-part",
    ],
)
async def test_headings_form_one_hierarchy(portal: PortalHarness, path: str) -> None:
    """One h1 per page, and no level skipped (an h3 only under an h2...)."""
    url = path.format(
        redevable=portal.primary.redevable_ids[0],
        account=portal.primary.bank_account_ids[0],
        statement=portal.primary.statement_ids[0],
    )
    async with portal.logged_in("cabinet") as client:
        html = (await client.get(url)).text
    levels = [int(level) for level in HEADING.findall(html)]
    assert levels and levels[0] == 1 and levels.count(1) == 1, levels
    for before, after in itertools.pairwise(levels):
        assert after <= before + 1, levels


def _luminance(colour: str) -> float:
    value = colour.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    channels = [int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    high, low = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_text_colours_have_a_contrast_of_at_least_4_5() -> None:
    """Every rule of the stylesheet that sets a text colour, against its own background or
    the one it sits on (the menu bar, the page behind the footer, else the white main)."""
    css = (templates_dir() / "web" / "releves.css").read_text(encoding="utf-8")
    assert contrast("#27ae60", "#fff") < 3  # the measure finds the old green "Succès"
    checked = 0
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        colour = re.search(r"(?<![-\w])color:\s*(#[0-9a-fA-F]{3,6})", body)
        if colour is None:
            continue
        own = re.search(r"background:\s*(#[0-9a-fA-F]{3,6})", body)
        for selector in selectors.split(","):
            selector = selector.strip()
            if own is not None:
                behind = own[1]
            elif selector.startswith("nav.menu"):
                behind = "#2b4a73"
            elif selector.startswith(("footer", "body")):
                behind = "#f4f5f7"
            else:
                behind = "#fff"
            ratio = contrast(colour[1], behind)
            assert ratio >= 4.5, f"{selector}: {colour[1]} on {behind} is {ratio:.2f}:1"
            checked += 1
    assert checked >= 15


def test_heading_sizes_decrease_with_their_level() -> None:
    css = (templates_dir() / "web" / "releves.css").read_text(encoding="utf-8")
    sizes = [
        int(re.search(rf"^h{level} {{ font-size: (\d+)px", css, re.M)[1])  # type: ignore[index]
        for level in (1, 2, 3)
    ]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 3, sizes
