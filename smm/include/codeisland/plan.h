/*
 * codeisland plan format v2 and SMM mailbox protocol -- the one definition.
 *
 * Everything that crosses the boundary between the host and the SMI handler is
 * declared here: the relocation plan, the mailbox that carries requests and
 * responses, the status codes, the address map and the sample ring.  The Python
 * mirror (host/codeisland/plan/layout.py) is checked against this header by a
 * probe (tests/test_layout_probe.py); change both or neither.
 *
 * All integers are little-endian.  Every record has a fixed size and every
 * table a fixed maximum, so the validator never sizes anything from a number it
 * has not bounded first.
 *
 * Plan layout (tables follow the header back to back, in this order; their
 * offsets derive from the counts, total_size must match exactly):
 *
 *   +--------------------+ 0
 *   | ci_plan_header     |   64 bytes
 *   +--------------------+ header_size
 *   | ci_island   [n]    |   40 bytes each
 *   | ci_fixup    [n]    |   16 bytes each, sorted by (island, offset)
 *   | ci_callsite [n]    |   16 bytes each
 *   | ci_chunk    [n]    |   24 bytes each, tiling each island in order
 *   | ci_target   [n]    |    8 bytes each, internal branch targets
 *   | ci_rule     [n]    |    8 bytes each, context rules
 *   +--------------------+ total_size
 */
#ifndef CODEISLAND_PLAN_H
#define CODEISLAND_PLAN_H

#include <stdint.h>

/* ---- identification ---------------------------------------------------- */

#define CI_PLAN_MAGIC      0x31764E414C504943ULL /* "CIPLANv1": the format family */
#define CI_PLAN_VERSION    2u  /* written by hosts today */
#define CI_PLAN_VERSION_MIN 1u /* oldest accepted: a v1 plan is a v2 plan whose
                                  islands are all physical (their reserved words
                                  are v2's space and cr3, and were 0) */
#define CI_ENGINE_VERSION  2u

/* ---- fixed maxima (per plan unless noted) ------------------------------- */

#define CI_MAX_ISLANDS        64u
#define CI_MAX_FIXUPS         8192u
#define CI_MAX_CALLSITES      1024u
#define CI_MAX_CHUNKS         4096u
#define CI_MAX_TARGETS        4096u
#define CI_MAX_RULES          CI_MAX_ISLANDS
#define CI_MAX_ISLAND_SIZE    (256u * 1024u)
#define CI_MAX_CHUNK_SIZE     4096u
#define CI_MAX_STACK_SLOTS    64u          /* return-address window, 8-byte slots */
#define CI_MAX_CPUS           64u          /* engine-wide */
#define CI_MAX_REGIONS        16u          /* engine-wide, registered before lock */
#define CI_MAX_MAP_ENTRIES    256u         /* engine-wide address map */
#define CI_MAX_GENERATIONS    16u          /* engine-wide undo stack depth */
#define CI_UNDO_POOL_BYTES    (1024u * 1024u) /* engine-wide saved bytes */
#define CI_PLAN_MAX_SIZE      (512u * 1024u)

/* ---- plan header ------------------------------------------------------- */

typedef struct ci_plan_header {
  uint64_t magic;          /* CI_PLAN_MAGIC */
  uint16_t version;        /* CI_PLAN_VERSION */
  uint16_t header_size;    /* sizeof(ci_plan_header) */
  uint32_t total_size;     /* header + all tables, <= CI_PLAN_MAX_SIZE */
  uint64_t digest;         /* ci_digest64(plan, total_size) with this field 0 */
  uint32_t plan_id;        /* chosen by the host, echoed in every result */
  uint32_t flags;          /* CI_PLAN_* */
  uint32_t island_count;
  uint32_t fixup_count;
  uint32_t callsite_count;
  uint32_t chunk_count;
  uint32_t target_count;
  uint32_t rule_count;
  uint32_t reserved[2];    /* must be 0 */
} ci_plan_header;

/*
 * KEEP_COPIES: ROLLBACK of this plan's generation restores the entry jumps,
 * the call sites and the saved contexts (RIPs and the return addresses its
 * rules' windows reach), but leaves the copies' bytes in place as valid code:
 * their fix-ups still resolve to the same absolute targets as the original,
 * so a return address into a copy that lies beyond every translated window
 * (a thread deeper in its stack) still returns into working code.  Without
 * the flag every byte the generation wrote comes back, the destination's
 * fill included.
 * Rule for the kept bytes: at ROLLBACK each copy's map entry becomes
 * CI_MAP_ROLLED_BACK | CI_MAP_RETIRED and stays in the map (never dropped to
 * make room) until a RECLAIM proves the copy unreachable (CI_CMD_RECLAIM
 * below); while retired, no later plan may use the copy's range as
 * destination (DST_OVERLAPS_CODE), as source (ISLAND_ACTIVE) or for a call
 * site (CALLSITE_IN_ISLAND).  Retired entries count against
 * CI_MAX_MAP_ENTRIES.  The destination chunks' undo records are dropped at
 * COMMIT (they would never be replayed), so such a generation holds only its
 * patch and context records in the undo pool.
 */
#define CI_PLAN_KEEP_COPIES 0x1u
#define CI_PLAN_FLAGS_KNOWN CI_PLAN_KEEP_COPIES

/* ---- islands ----------------------------------------------------------- */

/*
 * One island: [src, src+size) is copied to [dst, dst+size).  The original
 * stays in place; its entry gets the jump named by the ENTRY flag.
 *
 * Address space (v2).  space = CI_SPACE_PHYSICAL: src, dst and the island's
 * call sites are physical addresses (cr3 must be 0), as in v1.  CI_SPACE_USER
 * or CI_SPACE_KERNEL: they are virtual addresses in the 4-level page tables
 * whose root is cr3 (a process, or the kernel half of any process).  The
 * engine never takes a physical address from the host for such an island: it
 * walks the tables from cr3 itself, checks every table page and every final
 * page (SMRAM, the driver's pages, the registered regions; see
 * CI_MEM_RESTRICTED in engine.h), requires the walk of [src, src+size) and of
 * [dst, dst+size) to land on one physically contiguous range each, and walks
 * again at every later SMI that touches the plan (MAPPING_CHANGED if the
 * answer differs).  A USER island's pages must be user pages at every level.
 * Saved RIPs and return addresses are translated only for CPUs whose saved
 * CR3 names the same tables (compared with the PCID bits, 11:0, masked);
 * their stacks are walked from that CR3 too.
 */
typedef struct ci_island {
  uint64_t src;            /* original start; code runs here today */
  uint64_t dst;            /* destination start, inside a DEST region */
  uint32_t size;           /* bytes, 1..CI_MAX_ISLAND_SIZE */
  uint32_t id;             /* host's island id, echoed in the address map */
  uint32_t flags;          /* CI_ISLAND_* */
  uint32_t space;          /* CI_SPACE_* (v1: reserved, 0 = physical) */
  uint64_t cr3;            /* root of the page tables; 0 for PHYSICAL */
} ci_island;

#define CI_SPACE_PHYSICAL 0u /* addresses are physical */
#define CI_SPACE_USER     1u /* virtual, user pages (CPL 3 code of a process) */
#define CI_SPACE_KERNEL   2u /* virtual, supervisor pages allowed */
#define CI_SPACE_MAX      CI_SPACE_KERNEL

/* CR3 bits that name the page tables (PCID, 11:0, and bit 63 masked). */
#define CI_CR3_ADDR_MASK  0x000FFFFFFFFFF000ULL

#define CI_ISLAND_ENTRY_NONE   0x0u  /* no entry patch (call sites only) */
#define CI_ISLAND_ENTRY_REL32  0x1u  /* E9 rel32 at src, 5 bytes */
#define CI_ISLAND_ENTRY_ABS64  0x2u  /* FF 25 00000000 imm64 at src, 14 bytes */
#define CI_ISLAND_ENTRY_MASK   0x3u
#define CI_ISLAND_FLAGS_KNOWN  CI_ISLAND_ENTRY_MASK

#define CI_ENTRY_REL32_LEN 5u
#define CI_ENTRY_ABS64_LEN 14u

/* ---- fix-ups ----------------------------------------------------------- */

/*
 * A field in the island's copy that must be rewritten.  `target` is the
 * absolute address the field resolves to in the original; the engine checks
 * the original bytes agree, then writes the value that makes the copy resolve
 * to the same target (range-checked, never wrapped).
 *   REL32, RIPREL32: signed 32-bit field; resolves to
 *                    (address of field + pc_bias) + value,
 *                    pc_bias = bytes from the field to the end of the
 *                    instruction (4 for a plain call/jmp rel32).
 *   ABS64:           64-bit absolute address inside the island itself; the
 *                    copy gets target - src + dst.  pc_bias must be 0.
 */
typedef struct ci_fixup {
  uint16_t island;         /* index into the island table */
  uint8_t  kind;           /* CI_FIXUP_* */
  uint8_t  pc_bias;        /* see above, 4..15 for the 32-bit kinds */
  uint32_t offset;         /* offset of the field within the island */
  uint64_t target;         /* absolute target in the original */
} ci_fixup;

#define CI_FIXUP_REL32     1u /* branch or call displacement */
#define CI_FIXUP_RIPREL32  2u /* RIP-relative memory operand displacement */
#define CI_FIXUP_ABS64     3u /* absolute pointer into the island */

/* ---- call sites -------------------------------------------------------- */

/*
 * A direct call or jump elsewhere (outside every island of the plan, inside a
 * SOURCE region) whose rel32 targets island.src; COMMIT re-points it at dst.
 */
typedef struct ci_callsite {
  uint64_t insn;           /* address of the opcode byte */
  uint16_t island;         /* index into the island table */
  uint8_t  opcode;         /* 0xE8 call or 0xE9 jmp, checked against memory */
  uint8_t  reserved0;
  uint32_t reserved1;      /* must be 0 */
} ci_callsite;

/* ---- diff chunks ------------------------------------------------------- */

/*
 * The chunks of one island tile [0, size) in order.  digest is
 * ci_digest64 of the chunk's final bytes (copy with fix-ups applied); STAGE
 * writes only chunks whose destination differs, COMMIT re-checks chunks staged
 * in an earlier SMI against the digest.
 */
typedef struct ci_chunk {
  uint16_t island;
  uint16_t reserved0;      /* must be 0 */
  uint32_t offset;
  uint32_t length;         /* 1..CI_MAX_CHUNK_SIZE */
  uint32_t reserved1;      /* must be 0 */
  uint64_t digest;
} ci_chunk;

/* ---- internal branch targets ------------------------------------------- */

/* An offset inside the island that some branch of the island jumps to.  The
 * entry patch must not cover one (offset 0 is allowed: it is the entry). */
typedef struct ci_target {
  uint16_t island;
  uint16_t reserved;       /* must be 0 */
  uint32_t offset;
} ci_target;

/* ---- context rules ----------------------------------------------------- */

/* Saved RIPs inside a committed island are always translated (a thread left
 * inside the bytes the entry patch covers would fault).  A rule may add the
 * translation of return addresses found in the first stack_slots 8-byte slots
 * above each thread's saved RSP (the stack must lie in a STACK region). */
typedef struct ci_rule {
  uint16_t island;
  uint16_t flags;          /* CI_RULE_* */
  uint32_t stack_slots;    /* 0..CI_MAX_STACK_SLOTS */
} ci_rule;

#define CI_RULE_TRANSLATE_RIP     0x1u
#define CI_RULE_TRANSLATE_RETURN  0x2u
#define CI_RULE_FLAGS_KNOWN       0x3u

/* ---- regions registered before lock ------------------------------------ */

#define CI_REGION_SOURCE   0x1u  /* islands may be copied from here */
#define CI_REGION_DEST     0x2u  /* islands may be copied to here */
#define CI_REGION_STACK    0x4u  /* return-address windows may be read here */
#define CI_REGION_SMRAM    0x8u  /* forbidden: nothing may touch it */
#define CI_REGION_DRIVER   0x10u /* forbidden to page walks: the driver's own
                                    pages outside SMRAM (the mailbox) */

typedef struct ci_region_info {
  uint64_t base;
  uint64_t size;
  uint32_t flags;          /* CI_REGION_* */
  uint32_t reserved;
} ci_region_info;

/* ---- address map ------------------------------------------------------- */

typedef struct ci_map_entry {
  uint64_t orig;           /* original start */
  uint64_t cur;            /* where the island runs now */
  uint32_t size;
  uint32_t island_id;
  uint32_t generation;     /* generation that placed it */
  uint32_t flags;          /* CI_MAP_* */
} ci_map_entry;

#define CI_MAP_ACTIVE       0x1u
#define CI_MAP_ROLLED_BACK  0x2u
#define CI_MAP_RETIRED      0x4u  /* with ROLLED_BACK: copy kept, range reserved (KEEP_COPIES)
                                     until a RECLAIM frees it */

/* ---- sample ring ------------------------------------------------------- */

/* CPL is the saved CS selector's RPL (bits 1:0), which the CPU keeps equal
 * to the current privilege level; cr3 is the saved CR3 as found (PCID bits
 * included: mask with CI_CR3_ADDR_MASK to name the address space). */
typedef struct ci_sample {
  uint64_t rip;            /* saved RIP as found (not translated) */
  uint64_t cr3;            /* saved CR3: the address space RIP belongs to */
  uint32_t smi;            /* SMI counter when taken */
  uint16_t cpu;
  uint16_t generation;     /* address-map generation when taken */
  uint8_t  cpl;            /* 0 kernel .. 3 user */
  uint8_t  reserved0;      /* 0 */
  uint16_t reserved1;      /* 0 */
  uint32_t reserved2;      /* 0 */
} ci_sample;

/* ---- mailbox ----------------------------------------------------------- */

/*
 * The mailbox lives outside SMRAM in pages the driver reserves at its entry
 * point (before lock).  The host writes a request, raises a SW SMI with
 * sw_smi_value on port 0xB2, and polls done_sequence.
 *
 *   +----------------------+ mailbox_base
 *   | ci_mailbox header    |  one 4 KiB page
 *   +----------------------+ + request_offset
 *   | request (a plan)     |  CI_PLAN_MAX_SIZE
 *   +----------------------+ + response_offset
 *   | response             |  CI_RESPONSE_MAX
 *   +----------------------+ + sample_offset
 *   | ci_sample ring       |  CI_SAMPLE_RING_ENTRIES
 *   +----------------------+ mailbox_base + mailbox_size
 */
#define CI_MAILBOX_SIGNATURE    0x31584F424D4C4349ULL /* "CIMLBOX1" */
#define CI_MAILBOX_VERSION      2u  /* 2: 32-byte samples with CR3 and CPL */
#define CI_MAILBOX_HEADER_SIZE  4096u
#define CI_RESPONSE_MAX         (64u * 1024u)
#define CI_SAMPLE_RING_ENTRIES  4096u
#define CI_MAILBOX_SIZE         (1024u * 1024u)
#define CI_DEFAULT_SW_SMI       0xC1u
#define CI_STAGE_BUDGET_DEFAULT (16u * 1024u)   /* bytes copied per SMI */
#define CI_STAGE_BUDGET_MAX     (256u * 1024u)

typedef struct ci_mailbox {
  /* written by the driver at its entry point, read-only afterwards */
  uint64_t signature;        /* CI_MAILBOX_SIGNATURE */
  uint32_t version;          /* CI_MAILBOX_VERSION */
  uint32_t header_size;      /* sizeof(ci_mailbox) */
  uint64_t mailbox_base;     /* physical address of this header */
  uint32_t mailbox_size;
  uint32_t request_offset;
  uint32_t request_max;
  uint32_t response_offset;
  uint32_t response_max;
  uint32_t sample_offset;
  uint32_t sample_capacity;  /* entries */
  uint32_t sw_smi_value;     /* APM_CNT value the driver answers */
  uint64_t arena_base;       /* code arena reserved at entry */
  uint64_t arena_size;
  /* host -> driver */
  uint32_t command;          /* CI_CMD_* */
  uint32_t request_size;     /* bytes valid in the request area */
  uint32_t sequence;         /* bumped by the host for every request */
  uint32_t stage_budget;     /* bytes per SMI, 0 = default, clamped to max */
  /* driver -> host */
  uint32_t status;           /* CI_ST_* of the last request */
  uint32_t response_size;
  uint32_t done_sequence;    /* == sequence once the request is answered */
  uint32_t sample_head;      /* samples ever written; ring index = head % cap */
  uint32_t smi_count;        /* SMIs this driver handled */
  uint32_t firmware_flags;   /* CI_FIRMWARE_*, set at entry: how the firmware was built */
  uint32_t reserved[6];      /* must be 0 */
} ci_mailbox;

/* The layout every host publishes (the picture above), for a mailbox at
 * `base` that the host has zero-filled: every read-only header field but the
 * signature (written last, once the host answers) and firmware_flags. */
static inline void ci_mailbox_layout(ci_mailbox *m, uint64_t base, uint32_t sw_smi_value,
                                     uint64_t arena_base, uint64_t arena_size) {
  m->version = CI_MAILBOX_VERSION;
  m->header_size = sizeof(ci_mailbox);
  m->mailbox_base = base;
  m->mailbox_size = CI_MAILBOX_SIZE;
  m->request_offset = CI_MAILBOX_HEADER_SIZE;
  m->request_max = CI_PLAN_MAX_SIZE;
  m->response_offset = m->request_offset + CI_PLAN_MAX_SIZE;
  m->response_max = CI_RESPONSE_MAX;
  m->sample_offset = m->response_offset + CI_RESPONSE_MAX;
  m->sample_capacity = CI_SAMPLE_RING_ENTRIES;
  m->sw_smi_value = sw_smi_value;
  m->arena_base = arena_base;
  m->arena_size = arena_size;
}

/* firmware_flags.  BUILD_KNOWN: the driver was compiled inside the platform's own EDK2 build
 * and read its SMM protection settings there, so the other bits are evidence, not a guess.
 * SMM_UNRESTRICTED: that build set PcdCpuSmmRestrictedMemoryAccess FALSE (a test board: SMM may
 * touch any memory outside SMRAM; production boards keep it TRUE).  Without BUILD_KNOWN (the
 * driver built alone and injected) the mode is unknown. */
#define CI_FIRMWARE_BUILD_KNOWN       0x1u
#define CI_FIRMWARE_SMM_UNRESTRICTED  0x2u

/* Commands.  Requests: QUERY none; STAGE a plan, or empty to continue the
 * pending one; COMMIT empty (pending plan fully staged), or a plan whose
 * bytes fit the budget (staged and committed in this one SMI); ROLLBACK a
 * uint32_t generation (0 = the newest; all newer ones are undone first);
 * SAMPLE none; STATS none; RECLAIM none. */
#define CI_CMD_QUERY     1u
#define CI_CMD_STAGE     2u
#define CI_CMD_COMMIT    3u
#define CI_CMD_ROLLBACK  4u
#define CI_CMD_SAMPLE    5u
#define CI_CMD_STATS     6u
#define CI_CMD_RECLAIM   7u

/*
 * RECLAIM frees retired copies (CI_MAP_RETIRED) that no thread can reach any
 * more, proved by a conservative scan in this one SMI, with every CPU in SMM:
 *   - the saved RIP and all 16 GPRs of every CPU (the save state), and
 *   - every 8-byte aligned word of every CI_REGION_STACK region (the threads'
 *     stacks, the saved contexts of threads not on a CPU, the data they use:
 *     a host registers STACK regions that cover all of it),
 * read once each; a value inside a copy keeps it.  Words inside retired
 * copies themselves are not evidence (their only absolute self-pointers are
 * their own ABS64 fix-ups).  A kept copy also keeps every retired copy of an
 * older generation that was active when its own generation committed (its
 * code may branch into those by rel32).  Copies of virtual address spaces are
 * kept (a process's stacks are not STACK regions).  A freed copy is filled
 * with 0xCC (int3) and its entry loses CI_MAP_RETIRED (plain history: its
 * range is free for later plans).  CPU_ACCESS, or STACK_ACCESS if a CPU runs
 * managed code with its stack outside the STACK regions: nothing is freed.
 * The response appends ci_reclaim_info, then `considered` ci_reclaim_entry.
 */
typedef struct ci_reclaim_info {
  uint32_t considered;        /* retired copies examined */
  uint32_t reclaimed;         /* freed by this request */
  uint32_t registers_scanned;
  uint32_t reserved;          /* 0 */
  uint64_t words_scanned;     /* STACK-region words read */
  uint64_t bytes_freed;
} ci_reclaim_info;

typedef struct ci_reclaim_entry {
  uint64_t cur;               /* the retired copy */
  uint32_t size;
  uint32_t island_id;
  uint32_t generation;
  uint32_t verdict;           /* CI_RECLAIM_* */
  uint64_t where;             /* REGISTER: cpu << 32 | register number;
                                 MEMORY: address of the word; PINNED: the
                                 generation of the kept copy; else 0 */
} ci_reclaim_entry;

#define CI_RECLAIM_FREED          1u /* nothing refers to it: filled with int3, range free */
#define CI_RECLAIM_KEPT_REGISTER  2u /* a saved RIP or GPR points into it */
#define CI_RECLAIM_KEPT_MEMORY    3u /* a word of a STACK region points into it */
#define CI_RECLAIM_KEPT_PINNED    4u /* a kept newer copy may branch into it */
#define CI_RECLAIM_KEPT_SPACE     5u /* virtual address space: its stacks cannot be scanned */

/* Every response starts with ci_result; QUERY appends ci_query_info then
 * region_count ci_region_info; STATS appends map_count ci_map_entry. */
typedef struct ci_result {
  uint32_t command;
  uint32_t status;             /* CI_ST_* */
  uint32_t plan_id;
  uint32_t generation;         /* newest active generation after the request */
  uint32_t state;              /* CI_STATE_* of the pending plan */
  uint32_t smi;                /* SMI counter */
  uint32_t chunks_done;
  uint32_t chunks_total;
  uint32_t bytes_written;      /* this SMI */
  uint32_t bytes_skipped;      /* chunks found already identical, this SMI */
  uint32_t fixups_applied;     /* this SMI */
  uint32_t callsites_patched;  /* this SMI */
  uint32_t contexts_translated;/* saved RIPs rewritten, this SMI */
  uint32_t returns_translated; /* return addresses rewritten, this SMI */
  uint32_t bytes_restored;     /* undo, this SMI */
  uint32_t samples;            /* SAMPLE: samples written this SMI */
  uint32_t cpus;               /* CPUs seen in this SMI */
  uint32_t map_count;          /* entries in the address map */
  uint32_t failed_index;       /* record index that failed validation, or ~0 */
  uint32_t reserved;
} ci_result;

#define CI_NO_INDEX 0xFFFFFFFFu

typedef struct ci_query_info {
  uint32_t engine_version;
  uint32_t plan_version;
  uint32_t max_islands;
  uint32_t max_fixups;
  uint32_t max_callsites;
  uint32_t max_chunks;
  uint32_t max_targets;
  uint32_t max_cpus;
  uint32_t plan_max_size;
  uint32_t stage_budget;       /* in force */
  uint32_t region_count;
  uint32_t locked;             /* 1 once the allow-list is locked */
  uint32_t generations;        /* active generations */
  uint32_t undo_bytes_used;
  uint64_t total_bytes_written;
  uint64_t total_relocations;  /* islands committed, ever */
  uint64_t total_rollbacks;    /* generations rolled back, ever */
} ci_query_info;

/* Pending-plan states (explicit; each verb asserts the one it expects). */
#define CI_STATE_EMPTY      0u
#define CI_STATE_VALIDATED  1u
#define CI_STATE_STAGING    2u
#define CI_STATE_STAGED     3u
#define CI_STATE_COMMITTED  4u
#define CI_STATE_ROLLED_BACK 5u

/* ---- status codes: one per rejection reason.  Numbers are ABI: append. -- */

#define CI_STATUS_LIST(X)                                                        \
  X(0,  OK,                  "ok")                                               \
  X(1,  BAD_MAGIC,           "plan magic is wrong")                              \
  X(2,  BAD_VERSION,         "plan version is not supported")                    \
  X(3,  BAD_HEADER_SIZE,     "plan header size is wrong")                        \
  X(4,  BAD_TOTAL_SIZE,      "plan size does not match its tables")              \
  X(5,  BAD_DIGEST,          "plan digest does not match its bytes")             \
  X(6,  BAD_RESERVED,        "a reserved field or unknown flag is set")          \
  X(7,  TOO_MANY_ISLANDS,    "too many islands")                                 \
  X(8,  TOO_MANY_FIXUPS,     "too many fix-ups")                                 \
  X(9,  TOO_MANY_CALLSITES,  "too many call sites")                              \
  X(10, TOO_MANY_CHUNKS,     "too many diff chunks")                             \
  X(11, TOO_MANY_TARGETS,    "too many branch targets")                          \
  X(12, TOO_MANY_RULES,      "too many context rules")                           \
  X(13, ISLAND_SIZE,         "island size is zero or too large")                 \
  X(14, RANGE_WRAP,          "an address range wraps around")                    \
  X(15, TOUCHES_SMRAM,       "a range touches SMRAM")                            \
  X(16, SRC_NOT_REGISTERED,  "island source is outside the source regions")      \
  X(17, DST_NOT_REGISTERED,  "island destination is outside the dest regions")   \
  X(18, DST_OVERLAP,         "two destinations overlap")                         \
  X(19, DST_OVERLAPS_CODE,   "a destination overlaps a source or live copy")     \
  X(20, SRC_OVERLAP,         "two island sources overlap")                       \
  X(21, ISLAND_ACTIVE,       "island is already moved by an active generation")  \
  X(22, FIXUP_ISLAND,        "fix-up names no island")                           \
  X(23, FIXUP_KIND,          "fix-up kind or pc bias is invalid")                \
  X(24, FIXUP_OUTSIDE,       "fix-up field lies outside its island")             \
  X(25, FIXUP_ORDER,         "fix-ups are unsorted or overlap")                  \
  X(26, FIXUP_MISMATCH,      "original bytes disagree with a fix-up")            \
  X(27, FIXUP_RANGE,         "adjusted displacement does not fit rel32")         \
  X(28, CHUNK_ISLAND,        "chunk names no island")                            \
  X(29, CHUNK_LAYOUT,        "chunks do not tile their island in order")         \
  X(30, CHUNK_SIZE,          "chunk length is zero or too large")                \
  X(31, ENTRY_FLAGS,         "island entry kind is invalid")                     \
  X(32, ENTRY_TOO_SMALL,     "island is smaller than its entry patch")           \
  X(33, ENTRY_COVERS_TARGET, "entry patch covers an internal branch target")     \
  X(34, ENTRY_RANGE,         "entry jump does not reach the destination")        \
  X(35, TARGET_ISLAND,       "branch target names no island")                    \
  X(36, TARGET_OUTSIDE,      "branch target lies outside its island")            \
  X(37, CALLSITE_ISLAND,     "call site names no island")                        \
  X(38, CALLSITE_REGION,     "call site is outside the source regions")          \
  X(39, CALLSITE_IN_ISLAND,  "call site lies inside a moved island")             \
  X(40, CALLSITE_OPCODE,     "call site opcode differs from memory")             \
  X(41, CALLSITE_TARGET,     "call site does not target its island")             \
  X(42, CALLSITE_RANGE,      "re-pointed call site does not fit rel32")          \
  X(43, CALLSITE_OVERLAP,    "call sites overlap")                               \
  X(44, RULE_ISLAND,         "context rule names no island")                     \
  X(45, RULE_FLAGS,          "context rule flags or window are invalid")         \
  X(46, UNDO_FULL,           "undo log has no room for this plan")               \
  X(47, MAP_FULL,            "address map has no room for this plan")            \
  X(48, GENERATIONS_FULL,    "too many active generations")                      \
  X(49, NO_PENDING_PLAN,     "no pending plan to stage or commit")               \
  X(50, NOT_STAGED,          "plan is not fully staged")                         \
  X(51, STAGED_CHANGED,      "staged bytes changed before commit")               \
  X(52, OVER_BUDGET,         "plan does not fit the per-SMI budget")             \
  X(53, NOTHING_TO_ROLLBACK, "no generation to roll back")                       \
  X(54, BAD_GENERATION,      "generation is not active")                         \
  X(55, CPU_ACCESS,          "a CPU save state could not be read or written")    \
  X(56, TOO_MANY_CPUS,       "more CPUs than the engine supports")               \
  X(57, BAD_COMMAND,         "unknown command")                                  \
  X(58, BAD_REQUEST,         "request size is wrong for the command")            \
  X(59, NOT_READY,           "driver has no registered regions")                 \
  X(60, LOCKED,              "region allow-list is locked")                      \
  X(61, REGION_INVALID,      "region is empty, wraps, overlaps or table full")   \
  X(62, STACK_ACCESS,        "a stack window lies outside the stack regions")    \
  X(63, INTERNAL,            "internal engine error")                          \
  X(64, BAD_SPACE,           "island address space is invalid")                  \
  X(65, NONCANONICAL,        "a virtual address is not canonical")               \
  X(66, PAGE_NOT_PRESENT,    "a page walk reaches a non-present page")           \
  X(67, SUPERVISOR_PAGE,     "a user-space island maps a supervisor page")       \
  X(68, WALK_TABLE_SMRAM,    "a page-table page lies in SMRAM")                  \
  X(69, WALK_TABLE_OUTSIDE,  "a page-table page is outside the registered regions") \
  X(70, WALK_PAGE_SMRAM,     "a page walk lands in SMRAM")                       \
  X(71, WALK_DRIVER,         "a page walk reaches the driver's own pages")       \
  X(72, PAGES_DISCONTIGUOUS, "a virtual range maps to discontiguous pages")      \
  X(73, MAPPING_CHANGED,     "page tables changed since the plan was validated")

#define CI_STATUS_ENUM_ITEM(num, name, text) CI_ST_##name = num,
typedef enum ci_status { CI_STATUS_LIST(CI_STATUS_ENUM_ITEM) CI_ST__COUNT } ci_status;
#undef CI_STATUS_ENUM_ITEM

/* ---- EFI configuration table published by the driver -------------------- */

/* {453e16e8-a63d-46ee-ad5e-b684c2b746f2} */
#define CI_CONFIG_TABLE_GUID_STR "453e16e8-a63d-46ee-ad5e-b684c2b746f2"
#define CI_CONFIG_TABLE_GUID_INIT                                               \
  {0x453e16e8, 0xa63d, 0x46ee, {0xad, 0x5e, 0xb6, 0x84, 0xc2, 0xb7, 0x46, 0xf2}}
/* FFS file name of the driver: {4e7d080d-b263-4cac-8da4-b4683ba4c0b1} */
#define CI_DRIVER_FILE_GUID_STR "4e7d080d-b263-4cac-8da4-b4683ba4c0b1"

#define CI_CONFIG_SIGNATURE 0x31474643444C5349ULL /* "ISLDCFG1" */

typedef struct ci_config_table {
  uint64_t signature;       /* CI_CONFIG_SIGNATURE */
  uint32_t version;         /* CI_MAILBOX_VERSION */
  uint32_t size;            /* sizeof(ci_config_table) */
  uint64_t mailbox_base;
  uint64_t arena_base;
  uint64_t arena_size;
  uint32_t mailbox_size;
  uint32_t sw_smi_value;
} ci_config_table;

/* ---- layout checks: these sizes are ABI -------------------------------- */

_Static_assert(sizeof(ci_plan_header) == 64, "plan header");
_Static_assert(sizeof(ci_island) == 40, "island");
_Static_assert(sizeof(ci_fixup) == 16, "fixup");
_Static_assert(sizeof(ci_callsite) == 16, "callsite");
_Static_assert(sizeof(ci_chunk) == 24, "chunk");
_Static_assert(sizeof(ci_target) == 8, "target");
_Static_assert(sizeof(ci_rule) == 8, "rule");
_Static_assert(sizeof(ci_region_info) == 24, "region info");
_Static_assert(sizeof(ci_map_entry) == 32, "map entry");
_Static_assert(sizeof(ci_sample) == 32, "sample");
_Static_assert(sizeof(ci_mailbox) <= CI_MAILBOX_HEADER_SIZE, "mailbox header");
_Static_assert(sizeof(ci_result) == 80, "result");
_Static_assert(sizeof(ci_config_table) == 48, "config table");
_Static_assert(sizeof(ci_reclaim_info) == 32, "reclaim info");
_Static_assert(sizeof(ci_reclaim_entry) == 32, "reclaim entry");
_Static_assert(CI_MAILBOX_HEADER_SIZE + CI_PLAN_MAX_SIZE + CI_RESPONSE_MAX +
                   CI_SAMPLE_RING_ENTRIES * sizeof(ci_sample) <= CI_MAILBOX_SIZE,
               "mailbox areas fit");

#endif /* CODEISLAND_PLAN_H */
