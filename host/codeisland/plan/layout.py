"""Python mirror of smm/include/codeisland/plan.h (plan v2, mailbox, status codes).

The C header is the definition; tests/test_layout_probe.py compiles a probe against it and
compares every size, offset, constant and status code below, so the two cannot drift.
"""

from __future__ import annotations

import ctypes
import enum

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class _Record(ctypes.LittleEndianStructure):
    _pack_ = 8

    def to_bytes(self) -> bytes:
        return bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, offset: int = 0):  # type: ignore[no-untyped-def]
        return cls.from_buffer_copy(bytes(data[offset : offset + ctypes.sizeof(cls)]))

    def as_dict(self) -> dict[str, int | list[int]]:
        out: dict[str, int | list[int]] = {}
        for name, *_ in self._fields_:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, ctypes.Array) else int(value)
        return out


# ---- constants (names as in the header, CI_ prefix dropped) -----------------

PLAN_MAGIC = 0x31764E414C504943
PLAN_VERSION = 2
# oldest plan version the engine accepts (v1 = v2 with every island physical)
PLAN_VERSION_MIN = 1
ENGINE_VERSION = 2
MAX_ISLANDS = 64
MAX_FIXUPS = 8192
MAX_CALLSITES = 1024
MAX_CHUNKS = 4096
MAX_TARGETS = 4096
MAX_RULES = 64
MAX_ISLAND_SIZE = 256 * 1024
MAX_CHUNK_SIZE = 4096
MAX_STACK_SLOTS = 64
MAX_CPUS = 64
MAX_REGIONS = 16
MAX_MAP_ENTRIES = 256
MAX_GENERATIONS = 16
UNDO_POOL_BYTES = 1024 * 1024
PLAN_MAX_SIZE = 512 * 1024
# ROLLBACK leaves this plan's copies in place as valid code (retired: reserved for the boot)
PLAN_KEEP_COPIES = 0x1
PLAN_FLAGS_KNOWN = PLAN_KEEP_COPIES
ISLAND_ENTRY_NONE = 0x0
ISLAND_ENTRY_REL32 = 0x1
ISLAND_ENTRY_ABS64 = 0x2
ISLAND_ENTRY_MASK = 0x3
ISLAND_FLAGS_KNOWN = 0x3
SPACE_PHYSICAL = 0
SPACE_USER = 1
SPACE_KERNEL = 2
SPACE_MAX = SPACE_KERNEL
CR3_ADDR_MASK = 0x000FFFFFFFFFF000
ENTRY_REL32_LEN = 5
ENTRY_ABS64_LEN = 14
FIXUP_REL32 = 1
FIXUP_RIPREL32 = 2
FIXUP_ABS64 = 3
RULE_TRANSLATE_RIP = 0x1
RULE_TRANSLATE_RETURN = 0x2
RULE_FLAGS_KNOWN = 0x3
REGION_SOURCE = 0x1
REGION_DEST = 0x2
REGION_STACK = 0x4
REGION_SMRAM = 0x8
REGION_DRIVER = 0x10
MAP_ACTIVE = 0x1
MAP_ROLLED_BACK = 0x2
MAP_RETIRED = 0x4
MAILBOX_SIGNATURE = 0x31584F424D4C4349
MAILBOX_VERSION = 2
MAILBOX_HEADER_SIZE = 4096
RESPONSE_MAX = 64 * 1024
SAMPLE_RING_ENTRIES = 4096
MAILBOX_SIZE = 1024 * 1024
DEFAULT_SW_SMI = 0xC1
STAGE_BUDGET_DEFAULT = 16 * 1024
STAGE_BUDGET_MAX = 256 * 1024
CMD_QUERY = 1
CMD_STAGE = 2
CMD_COMMIT = 3
CMD_ROLLBACK = 4
CMD_SAMPLE = 5
CMD_STATS = 6
NO_INDEX = 0xFFFFFFFF
STATE_EMPTY = 0
STATE_VALIDATED = 1
STATE_STAGING = 2
STATE_STAGED = 3
STATE_COMMITTED = 4
STATE_ROLLED_BACK = 5
CONFIG_SIGNATURE = 0x31474643444C5349
FIRMWARE_BUILD_KNOWN = 0x1
FIRMWARE_SMM_UNRESTRICTED = 0x2

# name (CI_ prefix dropped) -> value, for the layout probe
CONSTANTS: dict[str, int] = {
    "PLAN_MAGIC": PLAN_MAGIC,
    "PLAN_VERSION": PLAN_VERSION,
    "PLAN_VERSION_MIN": PLAN_VERSION_MIN,
    "ENGINE_VERSION": ENGINE_VERSION,
    "MAX_ISLANDS": MAX_ISLANDS,
    "MAX_FIXUPS": MAX_FIXUPS,
    "MAX_CALLSITES": MAX_CALLSITES,
    "MAX_CHUNKS": MAX_CHUNKS,
    "MAX_TARGETS": MAX_TARGETS,
    "MAX_RULES": MAX_RULES,
    "MAX_ISLAND_SIZE": MAX_ISLAND_SIZE,
    "MAX_CHUNK_SIZE": MAX_CHUNK_SIZE,
    "MAX_STACK_SLOTS": MAX_STACK_SLOTS,
    "MAX_CPUS": MAX_CPUS,
    "MAX_REGIONS": MAX_REGIONS,
    "MAX_MAP_ENTRIES": MAX_MAP_ENTRIES,
    "MAX_GENERATIONS": MAX_GENERATIONS,
    "UNDO_POOL_BYTES": UNDO_POOL_BYTES,
    "PLAN_MAX_SIZE": PLAN_MAX_SIZE,
    "PLAN_KEEP_COPIES": PLAN_KEEP_COPIES,
    "PLAN_FLAGS_KNOWN": PLAN_FLAGS_KNOWN,
    "ISLAND_ENTRY_NONE": ISLAND_ENTRY_NONE,
    "ISLAND_ENTRY_REL32": ISLAND_ENTRY_REL32,
    "ISLAND_ENTRY_ABS64": ISLAND_ENTRY_ABS64,
    "ISLAND_ENTRY_MASK": ISLAND_ENTRY_MASK,
    "ISLAND_FLAGS_KNOWN": ISLAND_FLAGS_KNOWN,
    "SPACE_PHYSICAL": SPACE_PHYSICAL,
    "SPACE_USER": SPACE_USER,
    "SPACE_KERNEL": SPACE_KERNEL,
    "SPACE_MAX": SPACE_MAX,
    "CR3_ADDR_MASK": CR3_ADDR_MASK,
    "ENTRY_REL32_LEN": ENTRY_REL32_LEN,
    "ENTRY_ABS64_LEN": ENTRY_ABS64_LEN,
    "FIXUP_REL32": FIXUP_REL32,
    "FIXUP_RIPREL32": FIXUP_RIPREL32,
    "FIXUP_ABS64": FIXUP_ABS64,
    "RULE_TRANSLATE_RIP": RULE_TRANSLATE_RIP,
    "RULE_TRANSLATE_RETURN": RULE_TRANSLATE_RETURN,
    "RULE_FLAGS_KNOWN": RULE_FLAGS_KNOWN,
    "REGION_SOURCE": REGION_SOURCE,
    "REGION_DEST": REGION_DEST,
    "REGION_STACK": REGION_STACK,
    "REGION_SMRAM": REGION_SMRAM,
    "REGION_DRIVER": REGION_DRIVER,
    "MAP_ACTIVE": MAP_ACTIVE,
    "MAP_ROLLED_BACK": MAP_ROLLED_BACK,
    "MAP_RETIRED": MAP_RETIRED,
    "FIRMWARE_BUILD_KNOWN": FIRMWARE_BUILD_KNOWN,
    "FIRMWARE_SMM_UNRESTRICTED": FIRMWARE_SMM_UNRESTRICTED,
    "MAILBOX_SIGNATURE": MAILBOX_SIGNATURE,
    "MAILBOX_VERSION": MAILBOX_VERSION,
    "MAILBOX_HEADER_SIZE": MAILBOX_HEADER_SIZE,
    "RESPONSE_MAX": RESPONSE_MAX,
    "SAMPLE_RING_ENTRIES": SAMPLE_RING_ENTRIES,
    "MAILBOX_SIZE": MAILBOX_SIZE,
    "DEFAULT_SW_SMI": DEFAULT_SW_SMI,
    "STAGE_BUDGET_DEFAULT": STAGE_BUDGET_DEFAULT,
    "STAGE_BUDGET_MAX": STAGE_BUDGET_MAX,
    "CMD_QUERY": CMD_QUERY,
    "CMD_STAGE": CMD_STAGE,
    "CMD_COMMIT": CMD_COMMIT,
    "CMD_ROLLBACK": CMD_ROLLBACK,
    "CMD_SAMPLE": CMD_SAMPLE,
    "CMD_STATS": CMD_STATS,
    "NO_INDEX": NO_INDEX,
    "STATE_EMPTY": STATE_EMPTY,
    "STATE_VALIDATED": STATE_VALIDATED,
    "STATE_STAGING": STATE_STAGING,
    "STATE_STAGED": STATE_STAGED,
    "STATE_COMMITTED": STATE_COMMITTED,
    "STATE_ROLLED_BACK": STATE_ROLLED_BACK,
    "CONFIG_SIGNATURE": CONFIG_SIGNATURE,
}

CONFIG_TABLE_GUID = "453e16e8-a63d-46ee-ad5e-b684c2b746f2"
DRIVER_FILE_GUID = "4e7d080d-b263-4cac-8da4-b4683ba4c0b1"


class Command(enum.IntEnum):
    QUERY = 1
    STAGE = 2
    COMMIT = 3
    ROLLBACK = 4
    SAMPLE = 5
    STATS = 6


class Status(enum.IntEnum):
    """One status per rejection reason; numbers are ABI (see CI_STATUS_LIST)."""

    OK = 0
    BAD_MAGIC = 1
    BAD_VERSION = 2
    BAD_HEADER_SIZE = 3
    BAD_TOTAL_SIZE = 4
    BAD_DIGEST = 5
    BAD_RESERVED = 6
    TOO_MANY_ISLANDS = 7
    TOO_MANY_FIXUPS = 8
    TOO_MANY_CALLSITES = 9
    TOO_MANY_CHUNKS = 10
    TOO_MANY_TARGETS = 11
    TOO_MANY_RULES = 12
    ISLAND_SIZE = 13
    RANGE_WRAP = 14
    TOUCHES_SMRAM = 15
    SRC_NOT_REGISTERED = 16
    DST_NOT_REGISTERED = 17
    DST_OVERLAP = 18
    DST_OVERLAPS_CODE = 19
    SRC_OVERLAP = 20
    ISLAND_ACTIVE = 21
    FIXUP_ISLAND = 22
    FIXUP_KIND = 23
    FIXUP_OUTSIDE = 24
    FIXUP_ORDER = 25
    FIXUP_MISMATCH = 26
    FIXUP_RANGE = 27
    CHUNK_ISLAND = 28
    CHUNK_LAYOUT = 29
    CHUNK_SIZE = 30
    ENTRY_FLAGS = 31
    ENTRY_TOO_SMALL = 32
    ENTRY_COVERS_TARGET = 33
    ENTRY_RANGE = 34
    TARGET_ISLAND = 35
    TARGET_OUTSIDE = 36
    CALLSITE_ISLAND = 37
    CALLSITE_REGION = 38
    CALLSITE_IN_ISLAND = 39
    CALLSITE_OPCODE = 40
    CALLSITE_TARGET = 41
    CALLSITE_RANGE = 42
    CALLSITE_OVERLAP = 43
    RULE_ISLAND = 44
    RULE_FLAGS = 45
    UNDO_FULL = 46
    MAP_FULL = 47
    GENERATIONS_FULL = 48
    NO_PENDING_PLAN = 49
    NOT_STAGED = 50
    STAGED_CHANGED = 51
    OVER_BUDGET = 52
    NOTHING_TO_ROLLBACK = 53
    BAD_GENERATION = 54
    CPU_ACCESS = 55
    TOO_MANY_CPUS = 56
    BAD_COMMAND = 57
    BAD_REQUEST = 58
    NOT_READY = 59
    LOCKED = 60
    REGION_INVALID = 61
    STACK_ACCESS = 62
    INTERNAL = 63
    BAD_SPACE = 64
    NONCANONICAL = 65
    PAGE_NOT_PRESENT = 66
    SUPERVISOR_PAGE = 67
    WALK_TABLE_SMRAM = 68
    WALK_TABLE_OUTSIDE = 69
    WALK_PAGE_SMRAM = 70
    WALK_DRIVER = 71
    PAGES_DISCONTIGUOUS = 72
    MAPPING_CHANGED = 73

    @property
    def text(self) -> str:
        return STATUS_TEXT[self]


STATUS_TEXT: dict[Status, str] = {
    Status.OK: "ok",
    Status.BAD_MAGIC: "plan magic is wrong",
    Status.BAD_VERSION: "plan version is not supported",
    Status.BAD_HEADER_SIZE: "plan header size is wrong",
    Status.BAD_TOTAL_SIZE: "plan size does not match its tables",
    Status.BAD_DIGEST: "plan digest does not match its bytes",
    Status.BAD_RESERVED: "a reserved field or unknown flag is set",
    Status.TOO_MANY_ISLANDS: "too many islands",
    Status.TOO_MANY_FIXUPS: "too many fix-ups",
    Status.TOO_MANY_CALLSITES: "too many call sites",
    Status.TOO_MANY_CHUNKS: "too many diff chunks",
    Status.TOO_MANY_TARGETS: "too many branch targets",
    Status.TOO_MANY_RULES: "too many context rules",
    Status.ISLAND_SIZE: "island size is zero or too large",
    Status.RANGE_WRAP: "an address range wraps around",
    Status.TOUCHES_SMRAM: "a range touches SMRAM",
    Status.SRC_NOT_REGISTERED: "island source is outside the source regions",
    Status.DST_NOT_REGISTERED: "island destination is outside the dest regions",
    Status.DST_OVERLAP: "two destinations overlap",
    Status.DST_OVERLAPS_CODE: "a destination overlaps a source or live copy",
    Status.SRC_OVERLAP: "two island sources overlap",
    Status.ISLAND_ACTIVE: "island is already moved by an active generation",
    Status.FIXUP_ISLAND: "fix-up names no island",
    Status.FIXUP_KIND: "fix-up kind or pc bias is invalid",
    Status.FIXUP_OUTSIDE: "fix-up field lies outside its island",
    Status.FIXUP_ORDER: "fix-ups are unsorted or overlap",
    Status.FIXUP_MISMATCH: "original bytes disagree with a fix-up",
    Status.FIXUP_RANGE: "adjusted displacement does not fit rel32",
    Status.CHUNK_ISLAND: "chunk names no island",
    Status.CHUNK_LAYOUT: "chunks do not tile their island in order",
    Status.CHUNK_SIZE: "chunk length is zero or too large",
    Status.ENTRY_FLAGS: "island entry kind is invalid",
    Status.ENTRY_TOO_SMALL: "island is smaller than its entry patch",
    Status.ENTRY_COVERS_TARGET: "entry patch covers an internal branch target",
    Status.ENTRY_RANGE: "entry jump does not reach the destination",
    Status.TARGET_ISLAND: "branch target names no island",
    Status.TARGET_OUTSIDE: "branch target lies outside its island",
    Status.CALLSITE_ISLAND: "call site names no island",
    Status.CALLSITE_REGION: "call site is outside the source regions",
    Status.CALLSITE_IN_ISLAND: "call site lies inside a moved island",
    Status.CALLSITE_OPCODE: "call site opcode differs from memory",
    Status.CALLSITE_TARGET: "call site does not target its island",
    Status.CALLSITE_RANGE: "re-pointed call site does not fit rel32",
    Status.CALLSITE_OVERLAP: "call sites overlap",
    Status.RULE_ISLAND: "context rule names no island",
    Status.RULE_FLAGS: "context rule flags or window are invalid",
    Status.UNDO_FULL: "undo log has no room for this plan",
    Status.MAP_FULL: "address map has no room for this plan",
    Status.GENERATIONS_FULL: "too many active generations",
    Status.NO_PENDING_PLAN: "no pending plan to stage or commit",
    Status.NOT_STAGED: "plan is not fully staged",
    Status.STAGED_CHANGED: "staged bytes changed before commit",
    Status.OVER_BUDGET: "plan does not fit the per-SMI budget",
    Status.NOTHING_TO_ROLLBACK: "no generation to roll back",
    Status.BAD_GENERATION: "generation is not active",
    Status.CPU_ACCESS: "a CPU save state could not be read or written",
    Status.TOO_MANY_CPUS: "more CPUs than the engine supports",
    Status.BAD_COMMAND: "unknown command",
    Status.BAD_REQUEST: "request size is wrong for the command",
    Status.NOT_READY: "driver has no registered regions",
    Status.LOCKED: "region allow-list is locked",
    Status.REGION_INVALID: "region is empty, wraps, overlaps or table full",
    Status.STACK_ACCESS: "a stack window lies outside the stack regions",
    Status.INTERNAL: "internal engine error",
    Status.BAD_SPACE: "island address space is invalid",
    Status.NONCANONICAL: "a virtual address is not canonical",
    Status.PAGE_NOT_PRESENT: "a page walk reaches a non-present page",
    Status.SUPERVISOR_PAGE: "a user-space island maps a supervisor page",
    Status.WALK_TABLE_SMRAM: "a page-table page lies in SMRAM",
    Status.WALK_TABLE_OUTSIDE: "a page-table page is outside the registered regions",
    Status.WALK_PAGE_SMRAM: "a page walk lands in SMRAM",
    Status.WALK_DRIVER: "a page walk reaches the driver's own pages",
    Status.PAGES_DISCONTIGUOUS: "a virtual range maps to discontiguous pages",
    Status.MAPPING_CHANGED: "page tables changed since the plan was validated",
}


def status_text(code: int) -> str:
    """Text for a status number, including numbers this host does not know."""
    try:
        return STATUS_TEXT[Status(code)]
    except ValueError:
        return f"unknown status {code}"


# ---- records ------------------------------------------------------------------


class PlanHeader(_Record):
    _fields_ = [
        ("magic", u64),
        ("version", u16),
        ("header_size", u16),
        ("total_size", u32),
        ("digest", u64),
        ("plan_id", u32),
        ("flags", u32),
        ("island_count", u32),
        ("fixup_count", u32),
        ("callsite_count", u32),
        ("chunk_count", u32),
        ("target_count", u32),
        ("rule_count", u32),
        ("reserved", u32 * 2),
    ]


class Island(_Record):
    _fields_ = [
        ("src", u64),
        ("dst", u64),
        ("size", u32),
        ("id", u32),
        ("flags", u32),
        ("space", u32),
        ("cr3", u64),
    ]


class Fixup(_Record):
    _fields_ = [
        ("island", u16),
        ("kind", u8),
        ("pc_bias", u8),
        ("offset", u32),
        ("target", u64),
    ]


class Callsite(_Record):
    _fields_ = [
        ("insn", u64),
        ("island", u16),
        ("opcode", u8),
        ("reserved0", u8),
        ("reserved1", u32),
    ]


class Chunk(_Record):
    _fields_ = [
        ("island", u16),
        ("reserved0", u16),
        ("offset", u32),
        ("length", u32),
        ("reserved1", u32),
        ("digest", u64),
    ]


class Target(_Record):
    _fields_ = [("island", u16), ("reserved", u16), ("offset", u32)]


class Rule(_Record):
    _fields_ = [("island", u16), ("flags", u16), ("stack_slots", u32)]


class RegionInfo(_Record):
    _fields_ = [("base", u64), ("size", u64), ("flags", u32), ("reserved", u32)]


class MapEntry(_Record):
    _fields_ = [
        ("orig", u64),
        ("cur", u64),
        ("size", u32),
        ("island_id", u32),
        ("generation", u32),
        ("flags", u32),
    ]


class Sample(_Record):
    _fields_ = [
        ("rip", u64),
        ("cr3", u64),
        ("smi", u32),
        ("cpu", u16),
        ("generation", u16),
        ("cpl", u8),
        ("reserved0", u8),
        ("reserved1", u16),
        ("reserved2", u32),
    ]


class Mailbox(_Record):
    _fields_ = [
        ("signature", u64),
        ("version", u32),
        ("header_size", u32),
        ("mailbox_base", u64),
        ("mailbox_size", u32),
        ("request_offset", u32),
        ("request_max", u32),
        ("response_offset", u32),
        ("response_max", u32),
        ("sample_offset", u32),
        ("sample_capacity", u32),
        ("sw_smi_value", u32),
        ("arena_base", u64),
        ("arena_size", u64),
        ("command", u32),
        ("request_size", u32),
        ("sequence", u32),
        ("stage_budget", u32),
        ("status", u32),
        ("response_size", u32),
        ("done_sequence", u32),
        ("sample_head", u32),
        ("smi_count", u32),
        ("firmware_flags", u32),
        ("reserved", u32 * 6),
    ]


class Result(_Record):
    _fields_ = [
        ("command", u32),
        ("status", u32),
        ("plan_id", u32),
        ("generation", u32),
        ("state", u32),
        ("smi", u32),
        ("chunks_done", u32),
        ("chunks_total", u32),
        ("bytes_written", u32),
        ("bytes_skipped", u32),
        ("fixups_applied", u32),
        ("callsites_patched", u32),
        ("contexts_translated", u32),
        ("returns_translated", u32),
        ("bytes_restored", u32),
        ("samples", u32),
        ("cpus", u32),
        ("map_count", u32),
        ("failed_index", u32),
        ("reserved", u32),
    ]


class QueryInfo(_Record):
    _fields_ = [
        ("engine_version", u32),
        ("plan_version", u32),
        ("max_islands", u32),
        ("max_fixups", u32),
        ("max_callsites", u32),
        ("max_chunks", u32),
        ("max_targets", u32),
        ("max_cpus", u32),
        ("plan_max_size", u32),
        ("stage_budget", u32),
        ("region_count", u32),
        ("locked", u32),
        ("generations", u32),
        ("undo_bytes_used", u32),
        ("total_bytes_written", u64),
        ("total_relocations", u64),
        ("total_rollbacks", u64),
    ]


class ConfigTable(_Record):
    _fields_ = [
        ("signature", u64),
        ("version", u32),
        ("size", u32),
        ("mailbox_base", u64),
        ("arena_base", u64),
        ("arena_size", u64),
        ("mailbox_size", u32),
        ("sw_smi_value", u32),
    ]


# C struct name -> mirror, for the layout probe
RECORDS: dict[str, type[_Record]] = {
    "ci_plan_header": PlanHeader,
    "ci_island": Island,
    "ci_fixup": Fixup,
    "ci_callsite": Callsite,
    "ci_chunk": Chunk,
    "ci_target": Target,
    "ci_rule": Rule,
    "ci_region_info": RegionInfo,
    "ci_map_entry": MapEntry,
    "ci_sample": Sample,
    "ci_mailbox": Mailbox,
    "ci_result": Result,
    "ci_query_info": QueryInfo,
    "ci_config_table": ConfigTable,
}

# Plan tables in their fixed order after the header: (count field, record type)
PLAN_TABLES: tuple[tuple[str, type[_Record]], ...] = (
    ("island_count", Island),
    ("fixup_count", Fixup),
    ("callsite_count", Callsite),
    ("chunk_count", Chunk),
    ("target_count", Target),
    ("rule_count", Rule),
)
