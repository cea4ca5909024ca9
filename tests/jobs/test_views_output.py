"""The output viewer: tail, live follow by byte offset, stderr, download, and its limits."""

from __future__ import annotations

import pytest

from tests.jobs.views_support import build_world, client_for, home, make_job, write_owned

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user):
    return build_world(make_user)


@pytest.fixture
def out_file(unique):
    """A path in alice's home for a fake job's output; removed afterwards."""
    paths = []

    def make(suffix: str = "out"):
        path = home("alice") / f"portal-ui-{unique}.{suffix}"
        paths.append(path)
        return path
    yield make
    for path in paths:
        path.unlink(missing_ok=True)


def test_it_shows_the_tail_and_then_only_the_new_bytes(world, out_file):
    path = write_owned(out_file(), "epoch 1\nepoch 2\n", "alice")
    job = make_job(world["alice"], world["vision"], stdout_path=str(path))
    client = client_for(world["alice"])
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert '<pre class="output" id="output-text" data-follow>epoch 1\nepoch 2\n</pre>' in page
    assert f"/jobs/{job.pk}/output/?stream=stdout&amp;offset=16" in page

    with path.open("a") as fh:
        fh.write("epoch 3\n")
    more = client.get(f"/jobs/{job.pk}/output/", {"stream": "stdout", "offset": 16}).content.decode()
    assert '<span hx-swap-oob="beforeend:#output-text">epoch 3\n</span>' in more
    assert "epoch 1" not in more
    assert "offset=24" in more and 'hx-trigger="every 2s' in more


def test_following_stops_when_the_job_has_ended_and_nothing_is_new(world, out_file):
    path = write_owned(out_file(), "done\n", "alice")
    job = make_job(world["alice"], world["vision"], state="COMPLETED", stdout_path=str(path))
    more = client_for(world["alice"]).get(f"/jobs/{job.pk}/output/", {"offset": 5}).content.decode()
    assert "hx-trigger" not in more and "final output" in more


def test_a_shrunken_file_reloads_the_whole_card(world, out_file):
    path = write_owned(out_file(), "restarted\n", "alice")
    job = make_job(world["alice"], world["vision"], stdout_path=str(path))
    resp = client_for(world["alice"]).get(f"/jobs/{job.pk}/output/", {"offset": 5000})
    assert resp["HX-Retarget"] == "#output" and resp["HX-Reswap"] == "outerHTML"
    assert b'id="output"' in resp.content and b"restarted" in resp.content


def test_a_missing_file_is_explained_and_the_card_keeps_asking(world, out_file):
    job = make_job(world["alice"], world["vision"], state="PENDING", start_time=None,
                   stdout_path=str(out_file()))
    card = client_for(world["alice"]).get(f"/jobs/{job.pk}/output/").content.decode()
    assert "does not exist yet" in card
    assert 'id="output" class="card" hx-get=' in card and "every 2s" in card


def test_stderr_has_its_own_tab(world, out_file):
    out = write_owned(out_file("out"), "normal\n", "alice")
    err = write_owned(out_file("err"), "Traceback: boom\n", "alice")
    job = make_job(world["alice"], world["vision"], stdout_path=str(out), stderr_path=str(err))
    client = client_for(world["alice"])
    assert b"stderr</a>" in client.get(f"/jobs/{job.pk}/").content
    card = client.get(f"/jobs/{job.pk}/output/", {"stream": "stderr"}).content
    assert b"Traceback: boom" in card and b"normal" not in card


def test_download_is_an_attachment_capped_at_the_limit(world, out_file, settings):
    settings.OUTPUT_MAX_BYTES = 1024
    text = "".join(f"line {i:05d}\n" for i in range(500))  # 5,500 bytes
    path = write_owned(out_file(), text, "alice")
    job = make_job(world["alice"], world["vision"], slurm_job_id=4242, stdout_path=str(path))
    client = client_for(world["alice"])
    resp = client.get(f"/jobs/{job.pk}/output/download/", {"stream": "stdout"})
    assert resp["Content-Disposition"] == 'attachment; filename="slurm-4242.out"'
    assert resp["Content-Type"].startswith("text/plain")
    assert len(resp.content) == 1024 and resp.content.endswith(b"line 00499\n")
    assert b"the last 1.0" in client.get(f"/jobs/{job.pk}/").content


def test_download_without_output_says_why(world):
    job = make_job(world["alice"], world["vision"], stdout_path="")
    resp = client_for(world["alice"]).get(f"/jobs/{job.pk}/output/download/", follow=True)
    assert b"Slurm has not reported an output file" in resp.content


@pytest.mark.parametrize("params", [{"stream": "passwd"}, {"offset": "-1"}, {"offset": "1e9"},
                                    {"offset": "99999999999999999999999"}])
def test_bad_output_parameters_are_a_400(world, params):
    job = make_job(world["alice"], world["vision"])
    assert client_for(world["alice"]).get(f"/jobs/{job.pk}/output/", params).status_code == 400
