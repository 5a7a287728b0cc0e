"""UDIAT Dataset B phantoms in the release layout (datasets.md §1.5 and §4).

``original/000001.png…`` (8-bit grey B-mode images), binary ``GT/000001.png…`` (0/255) and ``DatasetB.xlsx`` with the
columns ``Image`` and ``Type`` (``Benign``/``Malignant``). The images come from the BUSI phantom's renderer
(:func:`semizoo.data.phantoms.busi.render`) set up as another scanner: a wider 4:3 frame, a finer point-spread
function (finer speckle) and a lower gain. Every case has one lesion; about a third are malignant (case ``k`` is
malignant when ``k % 3 == 1``: 54 of 163, as in the release). The workbook is written with :mod:`zipfile` and fixed
timestamps and document properties, so every file is byte-identical across runs.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np

from .busi import render, write_png
from .common import case_rng

__all__ = ["PRESETS", "FIELD_MM", "PSF_SCALE", "GAIN", "kind_of", "write_xlsx", "generate"]

# cases and the frame unit m per preset: W x H = 4m x 3m pixels (4:3), m drawn per case in the range
PRESETS = {
    "test": {"cases": 10, "unit": (24, 28)},
    "bench": {"cases": 163, "unit": (60, 64)},
}
FIELD_MM = 48.0  # frame width (the BUSI phantom's is 40 mm)
PSF_SCALE = 0.6  # finer speckle than the BUSI phantom's scanner
GAIN = 0.7  # darker images (another gain setting)
XLSX_NAME = "DatasetB.xlsx"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"


def kind_of(k: int) -> str:
    """Class of case ``k`` (0-based): ``malignant`` when ``k % 3 == 1``, else ``benign``."""
    return "malignant" if k % 3 == 1 else "benign"


def _column(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def write_xlsx(path: str | os.PathLike, rows: Sequence[Sequence[str | int | float]], sheet: str = "Sheet1") -> None:
    """Write ``rows`` (the first is the header) as a one-sheet xlsx workbook, byte-identical across runs.

    Strings go to the shared-string table (as Excel writes them), numbers to numeric cells. Zip entries carry the
    1980-01-01 timestamp and the document properties fixed dates, so nothing depends on the time of writing.
    """
    strings: list[str] = []
    index: dict[str, int] = {}
    row_xml = []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{_column(c)}{r}"
            if isinstance(value, str):
                if value not in index:
                    index[value] = len(strings)
                    strings.append(value)
                cells.append(f'<c r="{ref}" t="s"><v>{index[value]}</v></c>')
            else:
                cells.append(f'<c r="{ref}"><v>{value!r}</v></c>')
        row_xml.append(f'<row r="{r}">{"".join(cells)}</row>')
    head = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    shared = "".join(f"<si><t>{escape(s)}</t></si>" for s in strings)
    parts = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{_CT}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{_CT}.worksheet+xml"/>'
            f'<Override PartName="/xl/sharedStrings.xml" ContentType="{_CT}.sharedStrings+xml"/>'
            f'<Override PartName="/xl/styles.xml" ContentType="{_CT}.styles+xml"/>'
            '<Override PartName="/docProps/core.xml" '
            'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{_PKG_REL}">'
            f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
            f'<Relationship Id="rId2" Type="{_PKG_REL}/metadata/core-properties" Target="docProps/core.xml"/>'
            "</Relationships>"
        ),
        "docProps/core.xml": (
            '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            "<dc:creator>semizoo phantom</dc:creator>"
            '<dcterms:created xsi:type="dcterms:W3CDTF">2018-01-01T00:00:00Z</dcterms:created>'
            '<dcterms:modified xsi:type="dcterms:W3CDTF">2018-01-01T00:00:00Z</dcterms:modified>'
            "</cp:coreProperties>"
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{_MAIN}" xmlns:r="{_REL}">'
            f'<sheets><sheet name="{escape(sheet)}" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{_PKG_REL}">'
            f'<Relationship Id="rId1" Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{_REL}/sharedStrings" Target="sharedStrings.xml"/>'
            f'<Relationship Id="rId3" Type="{_REL}/styles" Target="styles.xml"/>'
            "</Relationships>"
        ),
        "xl/styles.xml": (
            f'<styleSheet xmlns="{_MAIN}"><fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
            '<fills count="2"><fill><patternFill patternType="none"/></fill>'
            '<fill><patternFill patternType="gray125"/></fill></fills>'
            '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
            '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
            '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
            '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>'
        ),
        "xl/sharedStrings.xml": (
            f'<sst xmlns="{_MAIN}" count="{len(strings)}" uniqueCount="{len(strings)}">{shared}</sst>'
        ),
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{_MAIN}"><sheetData>{"".join(row_xml)}</sheetData></worksheet>',
    }
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in parts.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 0
            info.external_attr = 0
            archive.writestr(info, head + text)


def generate(out: str | os.PathLike, cases: int, seed: int, preset: str) -> dict:
    """Write ``cases`` UDIAT-like cases; returns the manifest's layout part (ids, classes, entries)."""
    root = Path(out)
    (root / "original").mkdir(parents=True, exist_ok=True)
    (root / "GT").mkdir(parents=True, exist_ok=True)
    low, high = PRESETS[preset]["unit"]
    ids, rows = [], [["Image", "Type"]]
    counts = {"benign": 0, "malignant": 0}
    for k in range(cases):
        rng = case_rng(seed, "udiat", k)
        unit = int(rng.integers(low, high + 1))
        kind = kind_of(k)
        image, masks = render(rng, (3 * unit, 4 * unit), kind, 1, field_mm=FIELD_MM, psf_scale=PSF_SCALE, gain=GAIN)
        mask = masks[0]
        if not mask.any():  # cannot happen for a single lesion of >= 2.5 mm; keep the GT meaningful regardless
            raise RuntimeError(f"udiat phantom case {k}: empty lesion mask")
        name = f"{k + 1:06d}"
        write_png(root / "original" / f"{name}.png", image)
        write_png(root / "GT" / f"{name}.png", (mask * 255).astype(np.uint8))
        ids.append(name)
        rows.append([name, kind.capitalize()])
        counts[kind] += 1
    write_xlsx(root / XLSX_NAME, rows)
    return {"ids": ids, "classes": counts, "entries": ["original", "GT", XLSX_NAME]}
