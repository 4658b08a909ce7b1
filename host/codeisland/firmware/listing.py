"""`firmware list`: volumes, files, compressed sections and free space of an image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import sections as S
from .image import top_volumes
from .volume import Volume, parse_volume

MAX_DEPTH = 4  # flash -> compressed file -> inner volume; deeper nesting is listed, not opened


@dataclass
class FileInfo:
    guid: str
    type: int
    type_name: str
    name: str
    size: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VolumeInfo:
    where: str  # "0x0" for a top volume, "0x0/<file guid>/lzma/0xe0090" inside a compressed one
    fs_guid: str
    size: int
    free: int
    files: list[FileInfo] = field(default_factory=list)
    compressed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["files"] = [f.to_dict() for f in self.files]
        return d


@dataclass
class Listing:
    image: str
    volumes: list[VolumeInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "volumes": [v.to_dict() for v in self.volumes]}

    def __str__(self) -> str:
        lines = [self.image]
        for v in self.volumes:
            lines.append(
                f"volume {v.where}  {v.fs_guid}  size {v.size:#x}  free {v.free:#x}  "
                f"{len(v.files)} files"
            )
            lines += [
                f"  {c['file']}  {c['algorithm']} {c['packed']:#x} -> {c['unpacked']:#x} bytes"
                for c in v.compressed
            ]
            lines += [
                f"  {f.offset:#08x}  {f.guid}  {f.type_name:<22} {f.size:#9x}  {f.name}"
                for f in v.files
            ]
        return "\n".join(lines)


def list_image(raw: bytes, label: str) -> Listing:
    out: list[VolumeInfo] = []
    for off, vol in top_volumes(raw):
        _add_volume(out, vol, f"{off:#x}", 1)
    return Listing(label, out)


def _add_volume(out: list[VolumeInfo], vol: Volume, where: str, depth: int) -> None:
    info = VolumeInfo(where, str(vol.fs_guid), vol.length, vol.free_bytes)
    out.append(info)
    nested: list[tuple[Volume, str]] = []
    for f in vol.files:
        body = f.body(vol.data)
        secs = S.parse_sections(body, f"file {f.guid}") if f.type != 0xF0 else []
        info.files.append(
            FileInfo(str(f.guid), f.type, f.type_name, _ui_name(body, secs), f.size, f.offset)
        )
        for sec in secs:
            if sec.type != S.SECTION_GUID_DEFINED:
                continue
            hdr = S.guid_defined_header(body, sec, f"file {f.guid}")
            if hdr.guid != S.LZMA_GUID:
                info.compressed.append(
                    {
                        "file": str(f.guid),
                        "algorithm": str(hdr.guid),
                        "packed": sec.size,
                        "unpacked": 0,
                    }
                )
                continue
            stream = S.lzma_decompress(
                body[sec.offset + hdr.data_offset : sec.offset + sec.size], f"file {f.guid}"
            )
            info.compressed.append(
                {
                    "file": str(f.guid),
                    "algorithm": "lzma",
                    "packed": sec.size,
                    "unpacked": len(stream),
                }
            )
            for inner in S.parse_sections(stream, f"file {f.guid} stream"):
                if inner.type == S.SECTION_FV_IMAGE and depth < MAX_DEPTH:
                    start = inner.offset + inner.header_size
                    nested.append(
                        (
                            parse_volume(inner.body(stream), f"volume in {f.guid}"),
                            f"{where}/{f.guid}/lzma/{start:#x}",
                        )
                    )
    for vol2, where2 in nested:
        _add_volume(out, vol2, where2, depth + 1)


def _ui_name(body: bytes, secs: list[S.Section]) -> str:
    for sec in secs:
        if sec.type == S.SECTION_USER_INTERFACE:
            return sec.body(body).decode("utf-16-le", "replace").rstrip("\0")
    return ""
