"""tools/build_emoji64.py without the network: captions, the split by emoji, and a whole build from a
small fake set of npm packages (archives already in --npm-dir, so npm is never run), read back by the
project's folder reader."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from datamodules.folder import FolderDataModule

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_emoji64", ROOT / "tools" / "build_emoji64.py")
tool = importlib.util.module_from_spec(_spec)
sys.modules["build_emoji64"] = tool  # the render workers import it by name
_spec.loader.exec_module(tool)

# name, hexcode, group, subgroup, tags; the first three entries are never built
EMOJI = [
    ("regional indicator A", "1F1E6", None, None, []),
    ("light skin tone", "1F3FB", "component", "skin-tone", []),
    ("flag: Japan", "1F1EF-1F1F5", "flags", "country-flag", ["flag"]),
    ("grinning face", "1F600", "smileys-emotion", "face-smiling", ["face", "grin", "happy", "laugh", "smile",
                                                                   "teeth", ":D"]),
    ("two hearts", "1F495", "smileys-emotion", "heart", ["heart", "love", "two"]),
    ("red heart", "2764-FE0F", "smileys-emotion", "heart", ["heart", "love"]),
    ("hourglass done", "231B", "travel-places", "time", ["sand", "timer"]),
    ("keycap: #", "0023-FE0F-20E3", "symbols", "keycap", ["keycap"]),
    ("dog face", "1F436", "animals-nature", "animal-mammal", ["dog", "pet"]),
    ("cat face", "1F431", "animals-nature", "animal-mammal", ["cat", "pet"]),
    ("chequered flag", "1F3C1", "flags", "flag", ["chequered", "racing"]),
]
GROUPS = ["smileys-emotion", "component", "animals-nature", "travel-places", "symbols", "flags"]
SUBGROUPS = ["face-smiling", "heart", "skin-tone", "animal-mammal", "time", "keycap", "country-flag", "flag"]
NO_TWEMOJI = "1F431"  # cat face: no Twemoji drawing in the fake package


def png(colour: tuple[int, int, int], box: tuple[int, int, int, int] = (8, 8, 56, 56)) -> bytes:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse(box, fill=(*colour, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def pack(npm_dir: Path, name: str, files: dict[str, bytes]) -> None:
    """An npm-pack-like archive: ``npm_dir/NAME-VERSION.tgz`` holding ``package/...``."""
    version = tool.PACKAGES[name][0]
    with tarfile.open(npm_dir / f"{name}-{version}.tgz", "w:gz") as tar:
        for path, data in {"package.json": b'{"name": "%s"}' % name.encode(), **files}.items():
            info = tarfile.TarInfo(f"package/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def fake_npm(npm_dir: Path, with_svg: bool = False) -> None:
    npm_dir.mkdir(parents=True)
    data = [{"label": n, "hexcode": h, "emoji": chr(int(h.split("-")[0], 16)), "tags": t,
             **({"group": GROUPS.index(g), "subgroup": SUBGROUPS.index(s)} if g else {})} for n, h, g, s, t in EMOJI]
    messages = {"groups": [{"key": k, "order": i} for i, k in enumerate(GROUPS)],
                "subgroups": [{"key": k, "order": i} for i, k in enumerate(SUBGROUPS)]}
    pack(npm_dir, "emojibase-data", {"en/data.json": json.dumps(data).encode(),
                                     "en/messages.json": json.dumps(messages).encode(),
                                     "fr/data.json": b"[]"})
    for name, kind, colour in (("emoji-datasource-google", "google", (200, 30, 30)),
                               ("emoji-datasource-twitter", "twitter", (30, 30, 200))):
        rows, files = [], {}
        for _, code, *_ in EMOJI:
            image = code.lower() + ".png"
            drawn = not (kind == "twitter" and code == NO_TWEMOJI)
            rows.append({"unified": code, "image": image, f"has_img_{kind}": drawn})
            if drawn:
                files[f"img/{kind}/64/{image}"] = png(colour)
        files[f"img/{kind}/sheets/sheet.png"] = png(colour)  # not needed: left packed
        pack(npm_dir, name, {"emoji.json": json.dumps(rows).encode(), **files})
    if with_svg:
        svg = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
               b'<circle cx="36" cy="36" r="18" fill="#0a0"/></svg>')
        pack(npm_dir, "openmoji", {"data/openmoji.json": json.dumps([{"hexcode": "1F600"}]).encode(),
                                   "color/svg/1F600.svg": svg})


def run(tmp_path: Path, *extra: str) -> int:
    return tool.main(["--out", str(tmp_path / "out"), "--npm-dir", str(tmp_path / "npm"), "--vendors",
                      "noto,twemoji", "--workers", "1", *extra])


@pytest.fixture
def built(tmp_path, monkeypatch):
    fake_npm(tmp_path / "npm")
    monkeypatch.setattr(tool.subprocess, "run", lambda *a, **k: pytest.fail("npm must not run: packages are there"))
    assert run(tmp_path, "--test-fraction", "0.34") == 0
    return tmp_path / "out"


def emoji(name: str, hexcode: str = "1F600", tags: list[str] = ()) -> object:
    return tool.Emoji(hexcode, "?", name, list(tags), "g", "s")


def test_captions_follow_the_cldr_name():
    grin = emoji("grinning face", tags=["face", "grin", "happy", "laugh", "smile", "teeth", ":D", "grinning face"])
    lines = tool.captions(grin, "Noto")
    assert lines[:3] == ["grinning face", "an emoji of a grinning face", "a grinning face emoji in the Noto style"]
    name, *keywords = lines[3].split(", ")
    assert name == "grinning face" and len(keywords) == 4 and keywords == sorted(keywords)
    assert set(keywords) <= {"grin", "happy", "laugh", "smile", "teeth"}  # not ':D', not words of the name
    assert tool.captions(emoji("two hearts", tags=["love"]), "Twemoji") == [
        "two hearts", "an emoji of two hearts", "a two hearts emoji in the Twemoji style", "two hearts, love"]
    assert tool.captions(emoji("keycap: #", tags=["keycap"]), "Fluent") == [
        "keycap: #", "an emoji of a keycap #", "a keycap # emoji in the Fluent style"]  # no keyword left
    assert tool.captions(emoji("flag: Japan"), "OpenMoji")[1] == "an emoji of a flag of Japan"
    assert [tool.with_article(p) for p in ("hourglass done", "unicorn", "A button (blood type)", "people hugging",
                                           "man lifting weights", "glass of milk")] == [
        "an hourglass done", "a unicorn", "an A button (blood type)", "people hugging", "a man lifting weights",
        "a glass of milk"]
    assert tool.spoken_name("man: red hair") == "man, red hair"


def test_keywords_are_seeded_by_the_emoji():
    tags = [f"word{c}" for c in "abcdefgh"]
    first = tool.pick_keywords(emoji("thing", "1F600", tags))
    assert first == tool.pick_keywords(emoji("thing", "1F600", list(reversed(tags))))  # order of tags is irrelevant
    assert len(first) == 4 and first == sorted(first)
    others = {tuple(tool.pick_keywords(emoji("thing", f"1F6{i:02X}", tags))) for i in range(20)}
    assert len(others) > 1


def test_fluent_file_stems():
    assert tool.fluent_stem("A button (blood type)") == "a-button-blood-type"
    assert tool.fluent_stem("piñata") == "pinata"
    assert tool.fluent_stem("keycap: *") == "keycap-asterisk"
    assert tool.plain_code("2764-fe0f") == tool.plain_code("2764") == "2764"


def test_split_by_emoji_is_seeded_and_per_group():
    many = [tool.Emoji(f"{i:04X}", "?", f"e{i}", [], f"g{i % 3}", "s") for i in range(90)]
    test = tool.split_by_emoji(many, 0.1, seed=0)
    assert test == tool.split_by_emoji(list(reversed(many)), 0.1, seed=0)  # input order does not matter
    assert test != tool.split_by_emoji(many, 0.1, seed=1)
    per_group = defaultdict(int)
    for e in many:
        per_group[e.group] += e.hexcode in test
    assert dict(per_group) == {"g0": 3, "g1": 3, "g2": 3}
    assert tool.split_by_emoji(many, 0.0, seed=0) == set()


@pytest.mark.integration
def test_build_writes_the_project_layout(built, tmp_path):
    rows = [json.loads(line) for line in (built / "meta.jsonl").read_text(encoding="utf-8").splitlines()]
    names = [r["name"] for r in rows]
    assert "regional indicator A" not in names and "light skin tone" not in names and "flag: Japan" not in names
    assert len(rows) == 15 and names.count("cat face") == 1  # 8 emoji x 2 vendors, less cat face's Twemoji
    assert [r["name"] for r in rows[:4]] == ["grinning face"] * 2 + ["two hearts"] * 2  # emojibase order
    split_of = defaultdict(set)
    for r in rows:
        assert set(r) == {"file", "emoji", "hexcode", "name", "vendor", "group", "subgroup", "split", "captions"}
        assert r["file"] == f"{r['split']}/{r['hexcode'].lower()}_{r['vendor']}.png"
        assert (built / r["file"]).with_suffix(".txt").read_text(encoding="utf-8").splitlines() == r["captions"]
        image = Image.open(built / r["file"])
        assert image.size == (64, 64) and image.mode == "RGB"
        pixels = np.asarray(image)
        assert (pixels[0, 0] == 255).all() and pixels[32, 32].tolist() != [255, 255, 255]  # drawing centred on white
        split_of[r["hexcode"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())  # every emoji whole
    assert {s for (s,) in split_of.values()} == {"train", "test"}
    info = json.loads((built / "build_info.json").read_text())
    assert info["images"] == 15 and info["emoji"] == 8 and info["missing_per_vendor"] == {"noto": 0, "twemoji": 1}
    assert info["packages"]["emojibase-data"] == "17.0.0" and info["options"]["test_fraction"] == 0.34
    licences = (built / "LICENSES.md").read_text()
    assert "Apache-2.0" in licences and "CC-BY-4.0" in licences and "OpenMoji" not in licences
    assert sorted(p.name for p in tmp_path.iterdir()) == ["npm", "out"]  # no temporary folder left
    assert not (tmp_path / "npm" / "emojibase-data-17.0.0" / "package" / "fr").exists()  # only what is read
    assert not list((tmp_path / "npm").glob("*.tgz"))

    dm = FolderDataModule(root=str(built), manifest="meta.jsonl", group_by="emoji", label_columns=["group", "subgroup"],
                          image_size=64, cache_dir=str(tmp_path / "cache"), cache_text=False, num_workers=0,
                          batch_size=2)
    dm.setup("fit")
    test_files = {(built / r["file"]).resolve() for r in rows if r["split"] == "test"}
    assert {r.path.resolve() for r in dm.datasets["test"].records} == test_files
    record = dm.datasets["train"].records[0]
    assert set(record.labels) == {"group", "subgroup"} and len(record.captions) >= 3


@pytest.mark.integration
def test_same_seed_same_build_and_limit(built, tmp_path):
    first = (built / "meta.jsonl").read_text(encoding="utf-8")
    assert run(tmp_path, "--test-fraction", "0.34", "--overwrite") == 0  # packages already unpacked: reused
    assert (built / "meta.jsonl").read_text(encoding="utf-8") == first
    assert run(tmp_path, "--limit", "2", "--overwrite") == 0
    rows = [json.loads(line) for line in (built / "meta.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted({r["name"] for r in rows}) == ["grinning face", "two hearts"]
    assert len(list(built.rglob("*.png"))) == 4


@pytest.mark.integration
def test_errors_are_one_line_with_exit_2(built, tmp_path, monkeypatch, capsys):
    before = (built / "meta.jsonl").read_text(encoding="utf-8")
    capsys.readouterr()
    assert run(tmp_path) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.count("\n") == 1
    assert (built / "meta.jsonl").read_text(encoding="utf-8") == before  # untouched

    monkeypatch.setattr(tool.shutil, "which", lambda name: None)
    assert tool.main(["--out", str(tmp_path / "new"), "--npm-dir", str(tmp_path / "empty"), "--vendors", "noto"]) == 2
    assert "npm is not installed" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "cairosvg", None)  # import cairosvg now fails
    assert tool.main(["--out", str(tmp_path / "new"), "--npm-dir", str(tmp_path / "npm"), "--vendors", "openmoji"]) == 2
    err = capsys.readouterr().err
    assert "pip install cairosvg" in err and "apt-get install libcairo2" in err and err.count("\n") == 1
    assert not (tmp_path / "new").exists()


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    fake_npm(tmp_path / "npm")

    def broken(job):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tool, "render", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["npm"]


def test_svg_drawings_are_rendered(tmp_path):
    try:
        import cairosvg  # noqa: F401 - OSError when libcairo2 is absent
    except (ImportError, OSError):
        pytest.skip("cairosvg with libcairo2 is not installed (pip install -e .[emoji]; apt-get install libcairo2)")
    fake_npm(tmp_path / "npm", with_svg=True)
    out = tmp_path / "out"
    assert tool.main(["--out", str(out), "--npm-dir", str(tmp_path / "npm"), "--vendors", "openmoji",
                      "--size", "32", "--workers", "1"]) == 0
    rows = [json.loads(line) for line in (out / "meta.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["file"].split("/")[1] for r in rows] == ["1f600_openmoji.png"]
    pixels = np.asarray(Image.open(out / rows[0]["file"]))
    assert pixels.shape == (32, 32, 3) and (pixels[0, 0] == 255).all()
    assert pixels[16, 16].tolist()[1] > 100 > pixels[16, 16].tolist()[0]  # the green disc, centred
    assert rows[0]["captions"][2] == "a grinning face emoji in the OpenMoji style"
