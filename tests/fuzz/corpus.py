"""The fuzz corpus: seed files for every input chexcft reads, and seeded mutations of them.

Table-driven: FORMATS maps a format name to its seeds, its mutations and the reader that must cope with the
result. Adding an input is one more FormatSpec entry:

    FORMATS["nih"] = FormatSpec("table", "chexcft.data:read_table", _nih_seeds, CSV_MUTATIONS)

where `_nih_seeds()` returns [(name, bytes)] of small valid files. An input made of several files read together
(MIMIC-CXR's label, metadata and split CSVs) sets `one_folder`: each case is then a folder holding one mutated
file under its real name beside the other seeds unchanged. Nothing here is committed as data: the
corpus is regenerated from the seed files (pydicom's test files, pydicom-data, generated PNG/JPEG/CSV) and one
integer, so a failing case is reproduced by its id.
"""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tests.io_builders import png_16bit, png_chunk

Seeds = Callable[[], list[tuple[str, bytes]]]
Mutation = Callable[[bytes, random.Random], bytes]

MAX_SEED_BYTES = 400_000  # larger DICOM test files add time, not new code paths
HUGE_CELL = 10**6


@dataclass(frozen=True)
class FormatSpec:
    """One input kind: 'image' or 'table' cases, the reader ('module:function'), seed files, mutations by name."""

    kind: str
    reader: str
    seeds: Seeds
    mutations: tuple[str, ...]
    suffix: str = ""
    one_folder: bool = False  # the seeds are the files of one input: a case is a folder, one of them mutated


@dataclass(frozen=True)
class Case:
    """One corpus file: which format, seed and mutation made it, and where it is."""

    id: str
    format: str
    kind: str
    reader: str
    seed: str
    mutation: str
    path: str


# --------------------------------------------------------------------------------------------------- seeds


def _pydicom_files() -> list[Path]:
    """Image objects among pydicom's own test files and the pydicom-data store, found on disk (never downloaded)."""
    import hashlib

    import pydicom

    folders = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store  # pydicom-data

        folders.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    files, seen = [], set()
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if not (path.is_file() and path.suffix.lower() == ".dcm" and 0 < path.stat().st_size <= MAX_SEED_BYTES):
                continue
            digest = hashlib.sha256(path.read_bytes()).digest()
            try:
                has_pixels = "PixelData" in pydicom.dcmread(path, force=True, defer_size=1024)
            except Exception:
                has_pixels = True  # a broken test file is a fine seed too
            if has_pixels and digest not in seen:
                seen.add(digest)
                files.append(path)
    return files


def _dicom_seeds() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in _pydicom_files()]


def _grey(height: int, width: int, seed: int, high: int = 255) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 0.5 + 0.4 * np.sin(xx / 5.0 + rng.uniform(0, 6)) * np.cos(yy / 7.0)
    return np.clip(base * high, 0, high)


def _png(image, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **params)
    return out.getvalue()


def _png_seeds() -> list[tuple[str, bytes]]:
    from PIL import Image

    grey = _grey(40, 32, 1).astype(np.uint8)
    rgb = np.stack([grey, grey[::-1], np.full_like(grey, 90)], axis=-1)
    rgba = np.concatenate([rgb, np.full(grey.shape + (1,), 200, np.uint8)], axis=-1)
    return [
        ("grey8.png", _png(Image.fromarray(grey, mode="L"))),
        ("grey8_interlaced.png", _png(Image.fromarray(grey, mode="L"), optimize=False, interlace=1)),
        ("grey16.png", png_16bit(_grey(36, 28, 2, 65535).astype(np.uint16))),
        ("grey16_sbit12.png", png_16bit(_grey(36, 28, 3, 4095).astype(np.uint16), 12)),
        ("palette.png", _png(Image.fromarray(rgb, mode="RGB").convert("P", palette=Image.Palette.ADAPTIVE))),
        ("rgb.png", _png(Image.fromarray(rgb, mode="RGB"))),
        ("rgba.png", _png(Image.fromarray(rgba, mode="RGBA"))),
        ("grey_alpha.png", _png(Image.fromarray(np.stack([grey, grey], axis=-1), mode="LA"))),
        ("bilevel.png", _png(Image.fromarray(grey > 128))),
    ]


def _jpeg_seeds() -> list[tuple[str, bytes]]:
    from PIL import Image

    grey = _grey(48, 40, 4).astype(np.uint8)
    rgb = np.stack([grey, grey[::-1], np.full_like(grey, 60)], axis=-1)

    def jpeg(image, **params) -> bytes:
        out = io.BytesIO()
        image.save(out, format="JPEG", **params)
        return out.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6
    return [
        ("grey.jpg", jpeg(Image.fromarray(grey, mode="L"), quality=90)),
        ("rgb.jpg", jpeg(Image.fromarray(rgb, mode="RGB"), quality=85)),
        ("progressive.jpg", jpeg(Image.fromarray(grey, mode="L"), progressive=True)),
        ("rotated_exif.jpg", jpeg(Image.fromarray(rgb, mode="RGB"), exif=exif.tobytes())),
    ]


_CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,"
    "Support Devices"
)


def _chexpert_seeds() -> list[tuple[str, bytes]]:
    rng = random.Random(11)
    rows = [_CHEXPERT_HEADER]
    for index in range(12):
        labels = ",".join(rng.choice(["", "1.0", "0.0", "-1.0"]) for _ in range(14))
        view = rng.choice(["frontal", "lateral"])
        rows.append(
            f"CheXpert-v1.0-small/train/patient{index // 2 + 1:05d}/study{index % 2 + 1}/view1_{view}.jpg,"
            f"{rng.choice(['Male', 'Female'])},{rng.randint(18, 90)},{view.capitalize()},"
            f"{rng.choice(['AP', 'PA', ''])},{labels}"
        )
    paths_only = ["Path"] + [r.split(",")[0] for r in rows[1:]]
    return [
        ("train.csv", ("\n".join(rows) + "\n").encode()),
        ("one_row.csv", ("\n".join(rows[:2]) + "\n").encode()),
        ("test_paths.csv", ("\n".join(paths_only) + "\n").encode()),
    ]


def _nih_seeds() -> list[tuple[str, bytes]]:
    rng = random.Random(12)
    findings = ["No Finding", "Effusion", "Mass|Nodule", "Cardiomegaly|Edema", "Infiltration", "Hernia"]
    entry = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
             "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"]
    for index in range(12):
        patient, follow = index // 3 + 1, index % 3
        entry.append(
            f"{patient:08d}_{follow:03d}.png,{rng.choice(findings)},{follow},{patient},{rng.randint(20, 80)},"
            f"{rng.choice('MF')},{rng.choice(['PA', 'AP'])},2500,2048,0.143,0.143"
        )
    return [("Data_Entry_2017.csv", ("\n".join(entry) + "\n").encode())]


def _mimic_seeds() -> list[tuple[str, bytes]]:
    """The four MIMIC-CXR-JPG CSVs of one small release (12 subjects, 1-2 studies each, some laterals)."""
    from chexcft.data.mimic import LABEL_FILES, METADATA_FILE, SPLIT_FILE
    from tests.mimic_builders import LABEL_COLUMNS, METADATA_COLUMNS, SPLIT_COLUMNS

    rng = random.Random(13)
    meta, split = [",".join(METADATA_COLUMNS)], [",".join(SPLIT_COLUMNS)]
    labels = {name: [",".join(LABEL_COLUMNS)] for name in LABEL_FILES}
    for s in range(12):
        subject = str(10000032 + 7919 * s)
        for k in range(1 + s % 2):
            study = str(50000000 + 1000 * s + k)
            for labeler in LABEL_FILES:
                cells = ",".join(rng.choice(["", "1.0", "0.0", "-1.0"]) for _ in LABEL_COLUMNS[2:])
                labels[labeler].append(f"{subject},{study},{cells}")
            for view in ["PA", "LATERAL"][: 1 + (s + k) % 2]:
                dicom = "-".join(f"{rng.getrandbits(32):08x}" for _ in range(5))
                meta.append(f"{dicom},{subject},{study},CHEST (PA AND LAT),{view},3056,2544,{21800506 + s},"
                            f"213014.531,CHEST (PA AND LAT),{'postero-anterior' if view == 'PA' else 'lateral'},Erect")
                split.append(f"{dicom},{study},{subject},{rng.choice(['train', 'validate', 'test'])}")
    files = {METADATA_FILE: meta, SPLIT_FILE: split, **{LABEL_FILES[name]: rows for name, rows in labels.items()}}
    return [(name, ("\n".join(rows) + "\n").encode()) for name, rows in files.items()]


def read_mimic_case(path: str):  # -> pd.DataFrame
    """Read the MIMIC-CXR-JPG folder a case file lies in (with the NegBio labels when that is the case file)."""
    from chexcft.data.mimic import LABEL_FILES, read_mimic

    labeler = "negbio" if Path(path).name == LABEL_FILES["negbio"] else "chexpert"
    return read_mimic(Path(path).parent, labeler)[0]


# ----------------------------------------------------------------------------------------------- mutations


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut the file at a random offset (never to nothing)."""
    return data[: rng.randint(1, max(1, len(data) - 1))]


def _flip(data: bytes, rng: random.Random, low: int, high: int, count: int) -> bytes:
    out = bytearray(data)
    high = max(low + 1, min(high, len(out)))
    for _ in range(count):
        position = rng.randrange(low, high) if low < len(out) else rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def flip_header(data: bytes, rng: random.Random) -> bytes:
    """Flip a few bits in the first 1 kB (headers: DICOM meta, IHDR, SOF, CSV header)."""
    return _flip(data, rng, 0, 1024, rng.randint(1, 4))


def flip_pixels(data: bytes, rng: random.Random) -> bytes:
    """Flip bits in the second half of the file (pixel data, compressed streams)."""
    return _flip(data, rng, len(data) // 2, len(data), rng.randint(1, 16))


def _dicom_dataset(data: bytes):
    import pydicom

    return pydicom.dcmread(io.BytesIO(data), force=True)


def _dicom_bytes(ds) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


_ABSURD = {
    "Rows": [0, 1, 65535], "Columns": [0, 1, 65535], "BitsAllocated": [0, 1, 7, 12, 24, 64, 255],
    "BitsStored": [0, 1, 17, 33, 255], "HighBit": [0, 40, 255], "SamplesPerPixel": [0, 2, 4, 255],
    "PixelRepresentation": [2, 255], "NumberOfFrames": ["0", "-1", "99999", "x"],
    "PhotometricInterpretation": ["", "MONOCHROME3", "PALETTE COLOR", "YBR_FULL", "RGB"],
    "PlanarConfiguration": [1, 7], "WindowWidth": ["0", "-5", "nan", "1e309"], "WindowCenter": ["nan", "abc"],
    "RescaleSlope": ["0", "nan", "1e308", "inf"], "RescaleIntercept": ["nan", "-1e308"],
}


def dicom_absurd(data: bytes, rng: random.Random) -> bytes:
    """Set one to three image attributes (Rows, Columns, BitsAllocated, ...) to absurd values."""
    try:
        ds = _dicom_dataset(data)
    except Exception:
        return flip_header(data, rng)
    for keyword in rng.sample(sorted(_ABSURD), rng.randint(1, 3)):
        value = rng.choice(_ABSURD[keyword])
        try:
            setattr(ds, keyword, value)
        except Exception:
            continue
    try:
        return _dicom_bytes(ds)
    except Exception:
        return flip_header(data, rng)


_LENGTH_TAGS = [(0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0100), (0x0028, 0x0101), (0x0028, 0x0004),
                (0x0002, 0x0010), (0x0002, 0x0000), (0x0008, 0x0016), (0x7FE0, 0x0010), (0x0028, 0x1050)]
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def dicom_length(data: bytes, rng: random.Random) -> bytes:
    """Give a data element (Rows, Columns, Pixel Data, transfer syntax, ...) a wrong length field."""
    out = bytearray(data)
    candidates = []
    for group, element in _LENGTH_TAGS:
        for endian in "<>":
            tag = struct.pack(endian + "HH", group, element)
            start = out.find(tag, 128 if len(out) > 132 else 0)
            if start >= 0:
                candidates.append((start, endian))
    if not candidates:
        return flip_header(data, rng)
    start, endian = rng.choice(candidates)
    vr = bytes(out[start + 4 : start + 6])
    if vr.isalpha() and vr.isupper():
        width, offset = (4, start + 8) if vr in _LONG_VRS else (2, start + 6)
    else:
        width, offset = 4, start + 4
    if width == 2:
        value = rng.choice([0, 1, 3, 0x7FFF, 0xFFFF])
        out[offset : offset + 2] = struct.pack(endian + "H", value)
    else:
        old = struct.unpack(endian + "I", bytes(out[offset : offset + 4]))[0] if offset + 4 <= len(out) else 0
        value = rng.choice([0, 1, old + 1, max(0, old - 1), old * 2 + 7, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF])
        out[offset : offset + 4] = struct.pack(endian + "I", value & 0xFFFFFFFF)
    return bytes(out)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    chunks, position = [], 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunks.append((kind, data[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def _png_join(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, body) for kind, body in chunks)


def png_huge(data: bytes, rng: random.Random) -> bytes:
    """Rewrite IHDR (valid CRC) with huge, zero or inconsistent dimensions, bit depth or colour type."""
    chunks = _png_chunks(data)
    if not chunks or chunks[0][0] != b"IHDR":
        return flip_header(data, rng)
    width, height, depth, colour, *rest = struct.unpack(">IIBBBBB", chunks[0][1])
    choice = rng.randrange(5)
    if choice == 0:
        width, height = rng.choice([(2**31 - 1, 2**31 - 1), (100_000, 100_000), (20_000, 20_000), (1, 2**31 - 1)])
    elif choice == 1:
        width, height = rng.choice([(0, height), (width, 0), (0, 0)])
    elif choice == 2:
        depth = rng.choice([0, 3, 7, 32, 255])
    elif choice == 3:
        colour = rng.choice([1, 5, 7, 255])
    else:
        width, height = width * 64, height * 64  # plausible size, far too little data
    chunks[0] = (b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, *rest))
    return _png_join(chunks)


def png_chunks(data: bytes, rng: random.Random) -> bytes:
    """Chunk-level damage with valid CRCs: corrupt IDAT, absurd sBIT/PLTE/tRNS, huge length field, no IEND."""
    chunks = _png_chunks(data)
    if not chunks:
        return flip_header(data, rng)
    choice = rng.randrange(5)
    if choice == 0:
        chunks = [(k, _flip(b, rng, 2, len(b), 3) if k == b"IDAT" and b else b) for k, b in chunks]
    elif choice == 1:
        chunks.insert(1, (b"sBIT", bytes([rng.choice([0, 17, 255])] * rng.choice([1, 3, 7]))))
    elif choice == 2:
        chunks.insert(1, (rng.choice([b"PLTE", b"tRNS", b"iCCP", b"zTXt"]), bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 5, 800])))))
    elif choice == 3:
        chunks = [c for c in chunks if c[0] != b"IEND"] + [(b"IDAT", zlib.compress(b"\x00" * 10))]
    else:
        joined = _png_join(chunks)
        return joined[:33] + struct.pack(">I", 0x7FFFFFF0) + joined[37:]
    return _png_join(chunks)


def jpeg_huge(data: bytes, rng: random.Random) -> bytes:
    """Rewrite the SOF segment with huge or zero dimensions, odd precision or component counts."""
    out = bytearray(data)
    for marker in (0xC0, 0xC1, 0xC2):
        start = out.find(bytes([0xFF, marker]))
        if start >= 0:
            break
    else:
        return flip_header(data, rng)
    body = start + 4
    choice = rng.randrange(4)
    if choice == 0:
        out[body + 1 : body + 5] = struct.pack(">HH", *rng.choice([(65535, 65535), (40000, 30000), (1, 65535)]))
    elif choice == 1:
        out[body + 1 : body + 5] = struct.pack(">HH", *rng.choice([(0, 40), (48, 0), (0, 0)]))
    elif choice == 2:
        out[body] = rng.choice([0, 1, 12, 16, 255])
    else:
        out[body + 5] = rng.choice([0, 2, 4, 255])
    return bytes(out)


# CSV mutations work on text; `_cells` finds cell boundaries in the seed (which has no quotes).


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8").splitlines()


def _join(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


def _set_cell(lines: list[str], rng: random.Random, value: str, header: bool | None = None) -> list[str]:
    row = 0 if header else rng.randrange(1, len(lines)) if header is False or len(lines) > 1 and rng.random() < 0.7 else 0
    cells = lines[row].split(",")
    cells[rng.randrange(len(cells))] = value
    return lines[:row] + [",".join(cells)] + lines[row + 1 :]


def csv_encoding(data: bytes, rng: random.Random) -> bytes:
    """Another encoding: UTF-16, Latin-1 or cp1252 with accented text, a lone invalid byte, or a UTF-8 BOM."""
    lines = _set_cell(_lines(data), rng, rng.choice(["Männlich", "Féminin", "Ægir Ørsted", "naïve café"]))
    text = "\n".join(lines) + "\n"
    choice = rng.randrange(5)
    if choice == 0:
        return text.encode(rng.choice(["utf-16", "utf-16-le", "utf-32"]))
    if choice == 1:
        return text.encode(rng.choice(["latin-1", "cp1252"]))
    if choice == 2:
        raw = bytearray(text.encode("utf-8"))
        raw.insert(rng.randrange(len(raw)), rng.choice([0x80, 0xC3, 0xFF, 0xFE]))
        return bytes(raw)
    if choice == 3:
        return b"\xef\xbb\xbf" + text.encode("utf-8")
    return b"\xff\xfe" + text.encode("utf-8")


def csv_nul(data: bytes, rng: random.Random) -> bytes:
    """NUL bytes in a cell, in the header, or a run of them in the middle of the file."""
    lines = _lines(data)
    choice = rng.randrange(3)
    if choice == 0:
        return _join(_set_cell(lines, rng, "abc\x00def", header=False))
    if choice == 1:
        return _join(_set_cell(lines, rng, "Pa\x00th", header=True))
    position = rng.randrange(len(data))
    return data[:position] + b"\x00" * rng.randint(1, 64) + data[position:]


def csv_quotes(data: bytes, rng: random.Random) -> bytes:
    """Unbalanced, doubled and embedded quotes; a quoted cell holding commas and a newline."""
    lines = _lines(data)
    value = rng.choice(['"unterminated', 'a"b', '""', '"x,y"', '"multi\nline"', '"""', "'single'", '"a""b"'])
    return _join(_set_cell(lines, rng, value))


def csv_huge_cell(data: bytes, rng: random.Random) -> bytes:
    """A 10^6-character cell in the header or a data row (text, digits, or a path)."""
    lines = _lines(data)
    value = rng.choice(["A" * HUGE_CELL, "1" * HUGE_CELL, "patient00001/" + "x" * HUGE_CELL, "é" * (HUGE_CELL // 2)])
    return _join(_set_cell(lines, rng, value))


def csv_line_endings(data: bytes, rng: random.Random) -> bytes:
    """Each line ended by \\n, \\r\\n or a lone \\r at random; sometimes blank lines in between."""
    out = []
    for line in _lines(data):
        out.append(line + rng.choice(["\n", "\r\n", "\r"]) + (rng.choice(["", "", "\r\n", "\n\n"])))
    return "".join(out).encode("utf-8")


def csv_shape(data: bytes, rng: random.Random) -> bytes:
    """Rows with extra or missing cells, a header only, an empty file, a duplicated header, whitespace only."""
    lines = _lines(data)
    choice = rng.randrange(6)
    if choice == 0:
        row = rng.randrange(1, len(lines))
        lines[row] += ",extra" * rng.randint(1, 3)
    elif choice == 1:
        row = rng.randrange(1, len(lines))
        lines[row] = ",".join(lines[row].split(",")[: rng.randint(1, 3)])
    elif choice == 2:
        lines = lines[:1]
    elif choice == 3:
        return rng.choice([b"", b"\n", b"   \n\t\n", b"\xef\xbb\xbf"])
    elif choice == 4:
        lines.insert(rng.randrange(1, len(lines) + 1), lines[0])
    else:
        header = lines[0].split(",")
        header[rng.randrange(len(header))] = header[rng.randrange(len(header))]
        lines[0] = ",".join(header)
    return _join(lines)


MUTATIONS: dict[str, Mutation] = {
    "truncate": truncate, "flip_header": flip_header, "flip_pixels": flip_pixels,
    "dicom_absurd": dicom_absurd, "dicom_length": dicom_length,
    "png_huge": png_huge, "png_chunks": png_chunks, "jpeg_huge": jpeg_huge,
    "csv_encoding": csv_encoding, "csv_nul": csv_nul, "csv_quotes": csv_quotes, "csv_huge_cell": csv_huge_cell,
    "csv_line_endings": csv_line_endings, "csv_shape": csv_shape,
}  # fmt: skip
BYTE_MUTATIONS = ("truncate", "flip_header", "flip_pixels")
CSV_MUTATIONS = ("truncate", "flip_header", "csv_encoding", "csv_nul", "csv_quotes", "csv_huge_cell",
                 "csv_line_endings", "csv_shape")

FORMATS: dict[str, FormatSpec] = {
    "dicom": FormatSpec("image", "chexcft.io:read_xray", _dicom_seeds,
                        (*BYTE_MUTATIONS, "dicom_absurd", "dicom_absurd", "dicom_length", "dicom_length"), ".dcm"),
    "png": FormatSpec("image", "chexcft.io:read_xray", _png_seeds,
                      (*BYTE_MUTATIONS, "png_huge", "png_huge", "png_chunks", "png_chunks") * 3, ".png"),
    "jpeg": FormatSpec("image", "chexcft.io:read_xray", _jpeg_seeds,
                       (*BYTE_MUTATIONS, "truncate", "flip_pixels", "jpeg_huge", "jpeg_huge", "jpeg_huge") * 6, ".jpg"),
    "chexpert": FormatSpec("table", "chexcft.data:read_table", _chexpert_seeds, CSV_MUTATIONS * 12, ".csv"),
    "nih": FormatSpec("table", "chexcft.data:read_table", _nih_seeds, CSV_MUTATIONS * 20, ".csv"),
    "mimic": FormatSpec("table", "tests.fuzz.corpus:read_mimic_case", _mimic_seeds, CSV_MUTATIONS * 4,
                        one_folder=True),
}


def generate(out_dir: Path, seed: int = 0, formats: dict[str, FormatSpec] | None = None) -> list[Case]:
    """Write every seed file and its mutations under out_dir; return the cases (and write out_dir/cases.json)."""
    import warnings

    warnings.filterwarnings("ignore", module="pydicom")  # the absurd values are the point
    out_dir.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    for fmt, spec in (formats or FORMATS).items():
        folder = out_dir / fmt
        folder.mkdir(exist_ok=True)
        seeds = spec.seeds()
        for seed_index, (seed_name, data) in enumerate(seeds):
            variants = [("original", data)]
            for number, mutation in enumerate(spec.mutations):
                rng = random.Random(f"{seed}:{fmt}:{seed_name}:{number}")
                variants.append((mutation, MUTATIONS[mutation](data, rng)))
            for number, (mutation, content) in enumerate(variants):
                case_id = f"{fmt}-{seed_index:03d}-{number:02d}"
                stem = Path(seed_name).stem.replace(" ", "_")
                if spec.one_folder:
                    (folder / case_id).mkdir(exist_ok=True)
                    for other, other_data in seeds:
                        (folder / case_id / other).write_bytes(other_data)
                    path = folder / case_id / seed_name
                else:
                    path = folder / f"{case_id}-{stem}-{mutation}{spec.suffix}"
                path.write_bytes(content)
                cases.append(Case(case_id, fmt, spec.kind, spec.reader, seed_name, mutation, str(path)))
    (out_dir / "cases.json").write_text(json.dumps([asdict(c) for c in cases]))
    return cases
