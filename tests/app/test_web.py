"""The demo page in a real browser (Debian's Chromium driven by Playwright) against a real server process:
enroll two people, search and see the right name first, verify, delete, and an error case.
Screenshots of each view go to artifacts/screenshots (not committed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import LFW, ROOT

CHROMIUM = os.environ.get("FACESEARCH_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("FACESEARCH_ARTIFACTS", ROOT / "artifacts")) / "screenshots"


@pytest.fixture
def page(tmp_path: Path, server_factory):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)"
    server = server_factory(tmp_path / "data")
    server.wait_ready()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        pg = browser.new_page(viewport={"width": 1100, "height": 900})
        pg.set_default_timeout(60_000)
        pg.goto(server.url + "/")
        yield pg
        browser.close()


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def photo(name: str, i: int) -> str:
    return str(LFW / name / f"{name}_{i:04d}.jpg")


def test_enroll_search_verify_delete_and_error(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # gallery: enroll two people, two photos each
    page.click("#tab-gallery")
    for name in ("Tony_Blair", "Hugo_Chavez"):
        page.fill("#enroll-name", name)
        page.set_input_files("#enroll-files", [photo(name, 1), photo(name, 2)])
        page.click("#enroll-form button[type=submit]")
        page.wait_for_function("document.querySelectorAll('#enroll-results li').length == 2 && "
                               "![...document.querySelectorAll('#enroll-results li')]"
                               ".some(li => li.textContent.includes('enrolling'))")
        assert page.locator("#enroll-results li", has_text="enrolled as face").count() == 2
    page.wait_for_selector("#gallery-list .identity >> text=Hugo_Chavez")
    page.wait_for_function("document.querySelectorAll('#gallery-list img.thumb[src^=blob]').length >= 4")
    assert "2 identities" in page.text_content("#gallery-total")
    page.wait_for_selector("#gallery-model >> text=Embeddings: model fs-")  # the model the gallery was embedded with
    shot(page, "gallery")
    with page.expect_download() as download:  # subject access: the identity's zip
        page.locator(".identity", has_text="Tony_Blair").locator("button", has_text="Export").click()
    saved = tmp_path / "export.zip"
    download.value.save_as(saved)
    import zipfile

    with zipfile.ZipFile(saved) as z:
        assert '"identity": "Tony_Blair"' in z.read("identity.json").decode()
        assert sum(n.endswith("source.webp") for n in z.namelist()) == 2

    # search: the right name first
    page.click("#tab-search")
    page.set_input_files("#search-file", photo("Tony_Blair", 3))
    page.wait_for_selector("#search-matches .card")
    shot(page, "search")
    first = page.locator("#search-matches .card strong").first.text_content()
    assert first == "Tony_Blair"
    assert "found in" in page.text_content("#search-status")
    assert page.locator("#search-photo .box").count() >= 1

    # verify: same person and different people
    page.click("#tab-verify")
    page.set_input_files("#verify-file1", photo("Hugo_Chavez", 3))
    page.set_input_files("#verify-file2", photo("Hugo_Chavez", 4))
    page.click("#verify-run")
    page.wait_for_selector("#verify-result .scale")
    assert page.text_content("#verify-result .decision") == "Same person"
    shot(page, "verify")
    page.set_input_files("#verify-file2", photo("Tony_Blair", 4))
    page.click("#verify-run")
    page.wait_for_selector("#verify-result .decision >> text=Different people")

    # delete an identity (with confirmation)
    page.click("#tab-gallery")
    page.wait_for_selector("#gallery-list .identity >> text=Hugo_Chavez")
    page.once("dialog", lambda d: d.accept())
    page.locator(".identity", has_text="Hugo_Chavez").locator("button", has_text="Delete").click()
    page.wait_for_function("!document.querySelector('#gallery-list').textContent.includes('Hugo_Chavez')")
    assert "1 identity" in page.text_content("#gallery-total")

    # an error in words: a text file is not a photo
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    page.click("#tab-search")
    page.set_input_files("#search-file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert "could not be read as an image" in page.text_content("#error")
    shot(page, "error")

    # phone-sized screen: the layout still works
    page.set_viewport_size({"width": 390, "height": 844})
    page.click("#tab-gallery")
    page.wait_for_selector("#gallery-list .identity")
    shot(page, "gallery-phone")


def test_photos_tab_uploads_finds_my_photos_and_names_people(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Upload several photos with progress, find a person's photos from a selfie, name a group of faces."""
    page.click("#tab-photos")
    page.wait_for_selector("#people-list >> text=No unnamed faces")
    page.fill("#photos-album", "trip")
    uploads = [photo("Tony_Blair", 1), photo("Tony_Blair", 2), photo("Tony_Blair", 3), photo("Hugo_Chavez", 1)]
    page.set_input_files("#photos-files", uploads)
    page.click("#photos-form button[type=submit]")
    page.wait_for_function("document.querySelector('#photos-status').textContent.startsWith('4 of 4 photos')")
    assert page.get_attribute("#photos-progress", "value") == "4"

    page.set_input_files("#find-file", photo("Tony_Blair", 4))
    page.wait_for_selector("#find-results .card")
    assert page.text_content("#find-status").startswith("Found in ")
    assert page.locator("#find-results .card").count() >= 2
    shot(page, "photos-find")

    # the largest group is Tony Blair's; naming it makes an identity that the Gallery tab lists
    page.wait_for_selector("#people-list .person")
    top = page.locator("#people-list .person").first
    assert top.locator(".thumb").count() >= 2
    page.once("dialog", lambda d: d.accept("Tony Blair"))
    top.locator("button", has_text="Name").click()
    page.wait_for_function("document.querySelector('#photos-status').textContent.startsWith('Named Tony Blair')")
    shot(page, "photos-people")
    page.click("#tab-gallery")
    page.wait_for_selector("#gallery-list .identity >> text=Tony Blair")

    # regroup from scratch: the server works in the background, the page follows it
    page.click("#tab-photos")
    page.click("#people-rebuild")
    page.wait_for_function("/faces regrouped into \\d+ people/"
                           ".test(document.querySelector('#photos-status').textContent)")
    assert page.locator("#people-list .person").count() >= 1

    # an error in words: a selfie without a face
    blank = tmp_path / "wall.png"
    from PIL import Image

    Image.new("RGB", (300, 300), (200, 200, 200)).save(blank)
    page.click("#tab-photos")
    page.set_input_files("#find-file", str(blank))
    page.wait_for_selector("#error:not([hidden])")
    assert "No face was found" in page.text_content("#error")


def test_the_page_works_in_a_chosen_collection(page) -> None:  # type: ignore[no-untyped-def]
    from facesearch.client import FaceSearch

    base = page.url.rstrip("/")
    with FaceSearch(base) as fs:
        fs.create_collection("shop-a")
    with FaceSearch(base, collection="shop-a") as shop:
        shop.enroll("Hugo in shop A", photo("Hugo_Chavez", 1))
    page.reload()
    page.wait_for_selector("#role >> text=open service")
    assert page.eval_on_selector_all("#collection option", "os => os.map(o => o.value)") == ["default", "shop-a"]
    page.click("#tab-gallery")
    page.wait_for_selector("#gallery-total >> text=0 identities")  # default first: empty
    page.select_option("#collection", "shop-a")
    page.wait_for_selector("#gallery-list .identity >> text=Hugo in shop A")
    page.wait_for_function("document.querySelectorAll('#gallery-list img.thumb[src^=blob]').length == 1")
    shot(page, "collection")
    page.click("#tab-search")
    page.set_input_files("#search-file", photo("Hugo_Chavez", 2))
    page.wait_for_selector("#search-matches .card >> text=Hugo in shop A")
