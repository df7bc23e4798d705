#!/usr/bin/env python3
"""Build the emoji64 image-caption data set from emoji artwork published on the npm registry.

Each image is one vendor's drawing of one emoji, SIZE x SIZE RGB on white; its captions (one a line)
come from the emoji's Unicode CLDR name and keywords:

    grinning face
    an emoji of a grinning face
    a grinning face emoji in the Noto style
    grinning face, happy, laugh, smile, teeth     (the name and up to 4 keywords the name lacks)

Sources, pinned npm packages fetched with `npm pack` into --npm-dir unless already unpacked there:

    emojibase-data 17.0.0            names, keywords, groups, subgroups  MIT; CLDR data: Unicode License v3
    emoji-datasource-google 16.0.0   noto: Noto Color Emoji, 64 px PNG   Apache-2.0
    emoji-datasource-twitter 16.0.0  twemoji: Twemoji, 64 px PNG         CC-BY-4.0
    openmoji 17.0.0                  openmoji: OpenMoji colour SVG       CC-BY-SA-4.0
    fluentui-emoji 1.3.0             fluent: Fluent Emoji "modern" SVG   MIT

Skin tones, country and subdivision flags and components are left out. Drawings are cropped to their
content and centred at a fixed scale per vendor (a typical emoji spans about 54 of 64 pixels).

Output (--out; built in a temporary folder beside it, renamed into place when complete):

    train/<hexcode>_<vendor>.png + .txt   images and their captions
    test/...                              a seeded --test-fraction of each group's emoji, all the
                                          drawings of an emoji in one split
    meta.jsonl                            per image: file, emoji, hexcode, name, vendor, group,
                                          subgroup, split, captions (data.manifest for data=folder)
    LICENSES.md, build_info.json          licences and attribution; counts, versions and options

Requires Pillow and numpy; npm when packages must be fetched; for openmoji and fluent (SVG) cairosvg
(`pip install cairosvg`) and the cairo library (`apt-get install libcairo2`).

Usage: python tools/build_emoji64.py --out data/emoji64 [--npm-dir data/npm] [--size 64] [--seed 0]
    [--test-fraction 0.1] [--vendors noto,twemoji,openmoji,fluent] [--limit N] [--workers N] [--overwrite]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import unicodedata
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

BASE = "emojibase-data"
PACKAGES: dict[str, tuple[str, tuple[str, ...]]] = {  # name: (version, paths kept when unpacking)
    BASE: ("17.0.0", ("en/data.json", "en/messages.json", "LICENSE", "package.json")),
    "emoji-datasource-google": ("16.0.0", ("emoji.json", "img/google/64/", "LICENSE", "package.json")),
    "emoji-datasource-twitter": ("16.0.0", ("emoji.json", "img/twitter/64/", "LICENSE", "package.json")),
    "openmoji": ("17.0.0", ("data/openmoji.json", "color/svg/", "LICENSE.txt", "package.json")),
    "fluentui-emoji": ("1.3.0", ("icons/modern/", "LICENSE", "package.json")),
}


@dataclass(frozen=True)
class Vendor:
    package: str
    style: str  # as captions name it: "in the <style> style"
    licence: str
    credit: str
    fill: float  # output pixels (at 64) per source-canvas width


VENDORS: dict[str, Vendor] = {
    "noto": Vendor("emoji-datasource-google", "Noto", "Apache-2.0",
                   "Noto Emoji, Copyright Google Inc., Apache License 2.0", 55.7),
    "twemoji": Vendor("emoji-datasource-twitter", "Twemoji", "CC-BY-4.0",
                      "Twemoji graphics, Copyright Twitter, Inc. and other contributors (jdecked fork), licensed "
                      "CC BY 4.0, https://creativecommons.org/licenses/by/4.0/", 54.0),
    "openmoji": Vendor("openmoji", "OpenMoji", "CC-BY-SA-4.0",
                       "OpenMoji, the open-source emoji and icon project, https://openmoji.org, licensed CC BY-SA "
                       "4.0, https://creativecommons.org/licenses/by-sa/4.0/; these resized copies are shared "
                       "under the same licence", 72.5),
    "fluent": Vendor("fluentui-emoji", "Fluent", "MIT",
                     "Fluent Emoji (Color style), Copyright Microsoft Corporation, MIT License; npm packaging by "
                     "Mohammad Abu Mattar, MIT", 61.3),
}
MAX_FILL = 60 / 64  # no drawing wider than this share of the image
SKIPPED_SUBGROUPS = {"country-flag", "subdivision-flag"}
FLUENT_NAMES = {  # CLDR name -> Fluent file stem, where Fluent uses another name
    "black bird": "blackbird", "enraged face": "pouting-face", "face with crossed-out eyes": "knocked-out-face",
    "genie": "person-genie", "keycap: #": "keycap-hashtag", "keycap: *": "keycap-asterisk",
    "men with bunny ears": "man-with-bunny-ears", "men wrestling": "man-wrestling",
    "people with bunny ears": "person-with-bunny-ears", "people wrestling": "person-wrestling",
    "phoenix": "phoenix-bird", "red triangle pointed up": "red-triangle",
    "smiling face with open hands": "hugging-face", "stuffed flatbread": "stuffedbread",
    "women with bunny ears": "woman-with-bunny-ears", "women wrestling": "woman-wrestling",
    "zombie": "person-zombie",
}
PLURAL_WORDS = {"people", "men", "women", "children", "feet", "teeth", "mice", "dice"}
KEYWORD = re.compile(r"[a-z][a-z' -]{2,}")


class BuildError(Exception):
    """A problem the user can fix; reported as one line, exit status 2."""


@dataclass
class Emoji:
    hexcode: str  # emojibase's, e.g. "1F600" or "0023-FE0F-20E3"
    char: str
    name: str  # the CLDR label
    tags: list[str]
    group: str
    subgroup: str


# --------------------------------------------------------------------------------------- packages
def fetch_packages(npm_dir: Path, names: list[str]) -> dict[str, Path]:
    """``name -> unpacked package folder`` for ``names``, fetching and unpacking those not present."""
    npm_dir.mkdir(parents=True, exist_ok=True)
    folders = {}
    for name in names:
        version, keep = PACKAGES[name]
        folder = npm_dir / f"{name}-{version}"
        if not (folder / ".unpacked").is_file():
            archive = npm_dir / f"{name}-{version}.tgz"
            if not archive.is_file():
                if shutil.which("npm") is None:
                    raise BuildError(f"npm is not installed and {folder} is missing: install Node.js with npm "
                                     "(e.g. apt-get install npm), or copy the unpacked packages into --npm-dir")
                print(f"npm pack {name}@{version}", flush=True)
                done = subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=npm_dir,
                                      capture_output=True, text=True)
                if done.returncode != 0 or not archive.is_file():
                    why = (done.stderr.strip().splitlines() or ["no archive written"])[-1]
                    raise BuildError(f"npm pack {name}@{version} failed: {why}")
            shutil.rmtree(folder, ignore_errors=True)
            with tarfile.open(archive) as tar:
                wanted = [m for m in tar.getmembers()
                          if m.name.startswith("package/") and m.name[len("package/"):].startswith(keep)]
                tar.extractall(folder, members=wanted, filter="data")
            (folder / ".unpacked").write_text(f"{name}@{version}\n")
            archive.unlink()  # the unpacked subset is all a build reads
        folders[name] = folder / "package"
    return folders


def read_emoji(base: Path) -> list[Emoji]:
    """emojibase-data's emoji in its order, without components, regional indicators and country or
    subdivision flags (skin-tone variants are separate entries there and are not read)."""
    messages = json.loads((base / "en" / "messages.json").read_text(encoding="utf-8"))
    groups = {g["order"]: g["key"] for g in messages["groups"]}
    subgroups = {g["order"]: g["key"] for g in messages["subgroups"]}
    out = []
    for entry in json.loads((base / "en" / "data.json").read_text(encoding="utf-8")):
        if entry.get("group") is None:
            continue
        group, subgroup = groups[entry["group"]], subgroups[entry["subgroup"]]
        if group == "component" or subgroup in SKIPPED_SUBGROUPS:
            continue
        out.append(Emoji(entry["hexcode"], entry["emoji"], entry["label"], list(entry.get("tags", [])),
                         group, subgroup))
    return out


# --------------------------------------------------------------------------------------- sources
def plain_code(hexcode: str) -> str:
    """Upper-case code points without variation selector 16: the key shared by the sources."""
    return "-".join(p for p in re.split(r"[-_]", hexcode.upper()) if p and p != "FE0F")


def fluent_stem(name: str) -> str:
    """The Fluent file stem of a CLDR name: 'A button (blood type)' -> 'a-button-blood-type'."""
    if name in FLUENT_NAMES:
        return FLUENT_NAMES[name]
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9#*]+", "-", re.sub(r"['’“”.!()]", "", ascii_name)).strip("-")


def source_files(vendor: str, root: Path) -> dict[str, Path]:
    """A vendor's drawings: plain code -> file (Fluent: 'stem:' + file stem -> file)."""
    if vendor in ("noto", "twemoji"):
        kind = "google" if vendor == "noto" else "twitter"
        found = {}
        for entry in json.loads((root / "emoji.json").read_text(encoding="utf-8")):
            path = root / "img" / kind / "64" / entry["image"]
            if entry.get(f"has_img_{kind}") and path.is_file():
                found[plain_code(entry["unified"])] = path
        return found
    if vendor == "openmoji":
        rows = json.loads((root / "data" / "openmoji.json").read_text(encoding="utf-8"))
        paths = ((r["hexcode"], root / "color" / "svg" / f"{r['hexcode']}.svg") for r in rows)
        return {plain_code(code): path for code, path in paths if path.is_file()}
    return {f"stem:{p.stem}": p for p in (root / "icons" / "modern").glob("*.svg")}


def find_source(vendor: str, files: dict[str, Path], emoji: Emoji) -> Path | None:
    if vendor != "fluent":
        return files.get(plain_code(emoji.hexcode))
    stem = fluent_stem(emoji.name)
    return files.get(f"stem:{stem}") or files.get(f"stem:{stem}-default")


# --------------------------------------------------------------------------------------- captions
def article(phrase: str, before_noun: bool = False) -> str:
    """'a', 'an' or '' (a plural head: 'two hearts', 'people hugging') for a name; ``before_noun``:
    the name qualifies another noun ('a sparkles emoji'), so its own number does not matter."""
    head = re.split(r":| with | of | in | on | from | for ", phrase, maxsplit=1)[0].split()
    verb = next((i for i, w in enumerate(head) if i > 0 and w.endswith("ing") and len(w) > 4), len(head))
    last = head[:verb][-1].lower() if head else ""  # 'man lifting weights': the head is 'man'
    plural = last in PLURAL_WORDS or (len(last) > 3 and last.endswith("s") and not last.endswith(("ss", "us")))
    if plural and not before_noun:
        return ""
    text = phrase.lower()
    if text.startswith(("uni", "use", "one", "eu", "ufo")):
        return "a"
    spoken_vowel = text[:1] in "aeiou" or re.match(r"[aefhilmnorsx]\b", text)  # 'an M', 'an X'
    return "an" if text.startswith("hour") or spoken_vowel else "a"


def with_article(phrase: str, before_noun: bool = False) -> str:
    return " ".join(w for w in (article(phrase, before_noun), phrase) if w)


def spoken_name(name: str) -> str:
    """'flag: Japan' -> 'flag of Japan', 'keycap: 1' -> 'keycap 1', 'man: red hair' -> 'man, red hair'."""
    for prefix, joined in (("flag: ", "flag of "), ("family: ", "family of "), ("keycap: ", "keycap ")):
        if name.startswith(prefix):
            return joined + name[len(prefix):]
    return name.replace(": ", ", ")


def pick_keywords(emoji: Emoji, count: int = 4) -> list[str]:
    """Up to ``count`` keywords, words only and not all in the name, chosen by a hash of the emoji."""
    in_name = set(re.findall(r"[a-z]+", emoji.name.lower()))
    usable = [t for t in emoji.tags if KEYWORD.fullmatch(t) and not set(re.findall(r"[a-z]+", t)) <= in_name]
    usable.sort(key=lambda t: hashlib.sha1(f"{emoji.hexcode}/{t}".encode()).hexdigest())
    return sorted(usable[:count])


def captions(emoji: Emoji, style: str) -> list[str]:
    name = spoken_name(emoji.name)
    lines = [emoji.name, f"an emoji of {with_article(name)}", f"{with_article(name, True)} emoji in the {style} style"]
    keywords = pick_keywords(emoji)
    return lines + ([", ".join([name, *keywords])] if keywords else [])


# --------------------------------------------------------------------------------------- split, images
def split_by_emoji(emoji: list[Emoji], fraction: float, seed: int) -> set[str]:
    """The test emoji's hexcodes: a seeded ``fraction`` (rounded) of each group's emoji."""
    rng, test = np.random.default_rng(seed), set()
    for group in sorted({e.group for e in emoji}):
        codes = sorted(e.hexcode for e in emoji if e.group == group)
        chosen = rng.permutation(len(codes))[: int(round(len(codes) * fraction))]
        test.update(codes[i] for i in chosen)
    return test


def render(job: tuple[str, str, float, int]) -> str | None:
    """Draw ``source`` into ``target`` (a PNG, ``size`` square on white); None, or why it was skipped."""
    source, target, fill, size = job
    try:
        if source.endswith(".svg"):
            import cairosvg

            canvas = max(192, 3 * size)
            data = cairosvg.svg2png(url=source, output_width=canvas, output_height=canvas)
            drawing = Image.open(io.BytesIO(data)).convert("RGBA")
        else:
            with Image.open(source) as image:
                drawing = image.convert("RGBA")
        box = drawing.getchannel("A").point(lambda a: 255 if a > 12 else 0).getbbox()
        if box is None:
            return f"{source}: nothing drawn"
        width, height = box[2] - box[0], box[3] - box[1]
        on_white = Image.alpha_composite(Image.new("RGBA", drawing.size, "white"), drawing)
        content = on_white.convert("RGB").crop(box)
        span = min(max(width, height) / max(drawing.size) * fill / 64, MAX_FILL) * size
        scale = span / max(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        out = Image.new("RGB", (size, size), "white")
        out.paste(content.resize((w, h), Image.LANCZOS, reducing_gap=3.0), ((size - w) // 2, (size - h) // 2))
        out.save(target, optimize=True)
        return None
    except Exception as err:  # noqa: BLE001 - a broken source file is skipped and reported
        return f"{source}: {type(err).__name__}: {err}"


# --------------------------------------------------------------------------------------- build
def check_svg_support(vendors: list[str]) -> None:
    svg = [v for v in vendors if v in ("openmoji", "fluent")]
    if not svg:
        return
    try:
        import cairosvg  # noqa: F401 - raises OSError when libcairo is absent
    except (ImportError, OSError) as err:
        why = (str(err).splitlines() or [type(err).__name__])[0]
        raise BuildError(f"{', '.join(svg)} need cairosvg and libcairo ({why}): pip install cairosvg, "
                         f"apt-get install libcairo2; or leave them out (--vendors noto,twemoji)") from None


def write_licences(folder: Path, vendors: list[str]) -> None:
    lines = ["# Licences and attribution", "",
             f"Captions: Unicode CLDR emoji names and keywords, via npm `{BASE}@{PACKAGES[BASE][0]}` (MIT); "
             "the CLDR data is under the Unicode License v3.", "",
             "Images: the file name's suffix names the vendor.", ""]
    for key in vendors:
        v = VENDORS[key]
        lines.append(f"- `_{key}` ({v.licence}), from npm `{v.package}@{PACKAGES[v.package][0]}`: {v.credit}.")
    lines += ["", "Apple and Facebook emoji images are not included: they are not freely licensed."]
    (folder / "LICENSES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build(args: argparse.Namespace) -> dict:
    start = time.time()
    vendors = list(dict.fromkeys(v.strip() for v in args.vendors.split(",") if v.strip()))
    unknown = sorted(set(vendors) - set(VENDORS))
    if unknown or not vendors:
        raise BuildError(f"--vendors {args.vendors!r}: choose from {', '.join(VENDORS)}")
    out: Path = args.out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.overwrite)):
        raise BuildError(f"{out} exists and is not an empty folder: pass --overwrite to replace it, or another --out")
    check_svg_support(vendors)
    roots = fetch_packages(args.npm_dir, [BASE] + [VENDORS[v].package for v in vendors])
    emoji = read_emoji(roots[BASE])[: args.limit or None]
    files = {v: source_files(v, roots[VENDORS[v].package]) for v in vendors}
    sources = {(e.hexcode, v): p for e in emoji for v in vendors if (p := find_source(v, files[v], e))}
    drawn = [e for e in emoji if any((e.hexcode, v) in sources for v in vendors)]
    test = split_by_emoji(drawn, args.test_fraction, args.seed)

    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        rows, jobs = [], []
        for split in ("train", "test"):
            (work / split).mkdir(parents=True)
        for e in drawn:
            split = "test" if e.hexcode in test else "train"
            for v in (v for v in vendors if (e.hexcode, v) in sources):
                file = f"{split}/{e.hexcode.lower()}_{v}.png"
                rows.append(dict(file=file, emoji=e.char, hexcode=e.hexcode, name=e.name, vendor=v, group=e.group,
                                 subgroup=e.subgroup, split=split, captions=captions(e, VENDORS[v].style)))
                jobs.append((str(sources[e.hexcode, v]), str(work / file), VENDORS[v].fill, args.size))
        print(f"{len(drawn)} emoji, {len(jobs)} drawings to render", flush=True)
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers) as pool:
                problems = list(pool.map(render, jobs, chunksize=16))
        else:
            problems = [render(job) for job in jobs]
        for problem in filter(None, problems):
            print(f"skipped {problem}", file=sys.stderr)
        rows = [row for row, problem in zip(rows, problems) if problem is None]
        with open(work / "meta.jsonl", "w", encoding="utf-8") as meta:
            for row in rows:
                (work / row["file"]).with_suffix(".txt").write_text("\n".join(row["captions"]) + "\n", encoding="utf-8")
                meta.write(json.dumps(row, ensure_ascii=False) + "\n")
        write_licences(work, vendors)
        per_emoji = Counter(r["hexcode"] for r in rows)
        info = dict(
            seconds=round(time.time() - start, 1), images=len(rows),
            images_per_vendor=dict(Counter(r["vendor"] for r in rows)),
            images_per_split=dict(Counter(r["split"] for r in rows)), emoji=len(per_emoji),
            emoji_per_split=dict(Counter("test" if h in test else "train" for h in per_emoji)),
            groups=len({r["group"] for r in rows}), subgroups=len({r["subgroup"] for r in rows}),
            images_per_group=dict(Counter(r["group"] for r in rows)),
            vendors_per_emoji={str(k): n for k, n in sorted(Counter(per_emoji.values()).items())},
            missing_per_vendor={v: len(emoji) - sum(r["vendor"] == v for r in rows) for v in vendors},
            skipped=[p for p in problems if p], packages={n: PACKAGES[n][0] for n in roots},
            options=dict(out=str(out), npm_dir=str(args.npm_dir), vendors=",".join(vendors), size=args.size,
                         test_fraction=args.test_fraction, seed=args.seed, limit=args.limit),
        )
        (work / "build_info.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        work.rename(out)
        shutil.rmtree(old, ignore_errors=True)
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the data set folder to create")
    ap.add_argument("--npm-dir", type=Path, default=Path("data/npm"), help="where the npm packages are unpacked")
    ap.add_argument("--size", type=int, default=64, help="image width and height in pixels")
    ap.add_argument("--test-fraction", type=float, default=0.1, help="share of each group's emoji in test/")
    ap.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    ap.add_argument("--vendors", default=",".join(VENDORS), help=f"comma list of {', '.join(VENDORS)}")
    ap.add_argument("--limit", type=int, default=0, help="only the first N emoji (0: all), for quick checks")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="rendering processes")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    args = ap.parse_args(argv)
    if args.size < 8 or not 0 <= args.test_fraction < 1 or args.limit < 0 or args.workers < 1:
        ap.error("--size must be >= 8, --test-fraction in [0, 1), --limit >= 0, --workers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        info = build(args)
    except BuildError as err:
        print(f"build_emoji64: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {info['images']} images of {info['emoji']} emoji ({info['images_per_split']}) "
          f"in {info['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
