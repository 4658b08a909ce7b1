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
CMD_RECLAIM = 7
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
# RECLAIM verdicts per retired copy (ci_reclaim_entry.verdict)
RECLAIM_FREED = 1  # nothing refers to it: filled with int3, range free
RECLAIM_KEPT_REGISTER = 2  # a saved RIP or GPR points into it
RECLAIM_KEPT_MEMORY = 3  # a word of a STACK region points into it
RECLAIM_KEPT_PINNED = 4  # a kept newer copy may branch into it
RECLAIM_KEPT_SPACE = 5  # virtual address space: its stacks cannot be scanned

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
    "CMD_RECLAIM": CMD_RECLAIM,
    "NO_INDEX": NO_INDEX,
    "STATE_EMPTY": STATE_EMPTY,
    "STATE_VALIDATED": STATE_VALIDATED,
    "STATE_STAGING": STATE_STAGING,
    "STATE_STAGED": STATE_STAGED,
    "STATE_COMMITTED": STATE_COMMITTED,
    "STATE_ROLLED_BACK": STATE_ROLLED_BACK,
    "CONFIG_SIGNATURE": CONFIG_SIGNATURE,
    "RECLAIM_FREED": RECLAIM_FREED,
    "RECLAIM_KEPT_REGISTER": RECLAIM_KEPT_REGISTER,
    "RECLAIM_KEPT_MEMORY": RECLAIM_KEPT_MEMORY,
    "RECLAIM_KEPT_PINNED": RECLAIM_KEPT_PINNED,
    "RECLAIM_KEPT_SPACE": RECLAIM_KEPT_SPACE,
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
    RECLAIM = 7


# One row per status (number, name, text), as CI_STATUS_LIST in plan.h: the numbers are ABI and
# tests/test_layout_probe.py compares every row with the header's, so a new status is one row
# there and one here.
STATUS_TABLE: tuple[tuple[int, str, str], ...] = (
    (0, "OK", "ok"),
    (1, "BAD_MAGIC", "plan magic is wrong"),
    (2, "BAD_VERSION", "plan version is not supported"),
    (3, "BAD_HEADER_SIZE", "plan header size is wrong"),
    (4, "BAD_TOTAL_SIZE", "plan size does not match its tables"),
    (5, "BAD_DIGEST", "plan digest does not match its bytes"),
    (6, "BAD_RESERVED", "a reserved field or unknown flag is set"),
    (7, "TOO_MANY_ISLANDS", "too many islands"),
    (8, "TOO_MANY_FIXUPS", "too many fix-ups"),
    (9, "TOO_MANY_CALLSITES", "too many call sites"),
    (10, "TOO_MANY_CHUNKS", "too many diff chunks"),
    (11, "TOO_MANY_TARGETS", "too many branch targets"),
    (12, "TOO_MANY_RULES", "too many context rules"),
    (13, "ISLAND_SIZE", "island size is zero or too large"),
    (14, "RANGE_WRAP", "an address range wraps around"),
    (15, "TOUCHES_SMRAM", "a range touches SMRAM"),
    (16, "SRC_NOT_REGISTERED", "island source is outside the source regions"),
    (17, "DST_NOT_REGISTERED", "island destination is outside the dest regions"),
    (18, "DST_OVERLAP", "two destinations overlap"),
    (19, "DST_OVERLAPS_CODE", "a destination overlaps a source or live copy"),
    (20, "SRC_OVERLAP", "two island sources overlap"),
    (21, "ISLAND_ACTIVE", "island is already moved by an active generation"),
    (22, "FIXUP_ISLAND", "fix-up names no island"),
    (23, "FIXUP_KIND", "fix-up kind or pc bias is invalid"),
    (24, "FIXUP_OUTSIDE", "fix-up field lies outside its island"),
    (25, "FIXUP_ORDER", "fix-ups are unsorted or overlap"),
    (26, "FIXUP_MISMATCH", "original bytes disagree with a fix-up"),
    (27, "FIXUP_RANGE", "adjusted displacement does not fit rel32"),
    (28, "CHUNK_ISLAND", "chunk names no island"),
    (29, "CHUNK_LAYOUT", "chunks do not tile their island in order"),
    (30, "CHUNK_SIZE", "chunk length is zero or too large"),
    (31, "ENTRY_FLAGS", "island entry kind is invalid"),
    (32, "ENTRY_TOO_SMALL", "island is smaller than its entry patch"),
    (33, "ENTRY_COVERS_TARGET", "entry patch covers an internal branch target"),
    (34, "ENTRY_RANGE", "entry jump does not reach the destination"),
    (35, "TARGET_ISLAND", "branch target names no island"),
    (36, "TARGET_OUTSIDE", "branch target lies outside its island"),
    (37, "CALLSITE_ISLAND", "call site names no island"),
    (38, "CALLSITE_REGION", "call site is outside the source regions"),
    (39, "CALLSITE_IN_ISLAND", "call site lies inside a moved island"),
    (40, "CALLSITE_OPCODE", "call site opcode differs from memory"),
    (41, "CALLSITE_TARGET", "call site does not target its island"),
    (42, "CALLSITE_RANGE", "re-pointed call site does not fit rel32"),
    (43, "CALLSITE_OVERLAP", "call sites overlap"),
    (44, "RULE_ISLAND", "context rule names no island"),
    (45, "RULE_FLAGS", "context rule flags or window are invalid"),
    (46, "UNDO_FULL", "undo log has no room for this plan"),
    (47, "MAP_FULL", "address map has no room for this plan"),
    (48, "GENERATIONS_FULL", "too many active generations"),
    (49, "NO_PENDING_PLAN", "no pending plan to stage or commit"),
    (50, "NOT_STAGED", "plan is not fully staged"),
    (51, "STAGED_CHANGED", "staged bytes changed before commit"),
    (52, "OVER_BUDGET", "plan does not fit the per-SMI budget"),
    (53, "NOTHING_TO_ROLLBACK", "no generation to roll back"),
    (54, "BAD_GENERATION", "generation is not active"),
    (55, "CPU_ACCESS", "a CPU save state could not be read or written"),
    (56, "TOO_MANY_CPUS", "more CPUs than the engine supports"),
    (57, "BAD_COMMAND", "unknown command"),
    (58, "BAD_REQUEST", "request size is wrong for the command"),
    (59, "NOT_READY", "driver has no registered regions"),
    (60, "LOCKED", "region allow-list is locked"),
    (61, "REGION_INVALID", "region is empty, wraps, overlaps or table full"),
    (62, "STACK_ACCESS", "a stack window lies outside the stack regions"),
    (63, "INTERNAL", "internal engine error"),
    (64, "BAD_SPACE", "island address space is invalid"),
    (65, "NONCANONICAL", "a virtual address is not canonical"),
    (66, "PAGE_NOT_PRESENT", "a page walk reaches a non-present page"),
    (67, "SUPERVISOR_PAGE", "a user-space island maps a supervisor page"),
    (68, "WALK_TABLE_SMRAM", "a page-table page lies in SMRAM"),
    (69, "WALK_TABLE_OUTSIDE", "a page-table page is outside the registered regions"),
    (70, "WALK_PAGE_SMRAM", "a page walk lands in SMRAM"),
    (71, "WALK_DRIVER", "a page walk reaches the driver's own pages"),
    (72, "PAGES_DISCONTIGUOUS", "a virtual range maps to discontiguous pages"),
    (73, "MAPPING_CHANGED", "page tables changed since the plan was validated"),
)


class _StatusBase(enum.IntEnum):
    @property
    def text(self) -> str:
        return STATUS_TEXT[self]  # type: ignore[index]


# One status per rejection reason; numbers are ABI (see CI_STATUS_LIST).
Status = _StatusBase("Status", [(name, num) for num, name, _text in STATUS_TABLE])  # type: ignore[misc]
STATUS_TEXT: dict[int, str] = {Status(num): text for num, _name, text in STATUS_TABLE}


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


class ReclaimInfo(_Record):
    _fields_ = [
        ("considered", u32),
        ("reclaimed", u32),
        ("registers_scanned", u32),
        ("reserved", u32),
        ("words_scanned", u64),
        ("bytes_freed", u64),
    ]


class ReclaimEntry(_Record):
    _fields_ = [
        ("cur", u64),
        ("size", u32),
        ("island_id", u32),
        ("generation", u32),
        ("verdict", u32),
        ("where", u64),
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
    "ci_reclaim_info": ReclaimInfo,
    "ci_reclaim_entry": ReclaimEntry,
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
