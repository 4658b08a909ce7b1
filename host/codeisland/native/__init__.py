"""The native host: the same engine and plans on a live Linux process.

codeisland native run -- PROGRAM ARGS
    |  process.launch(): PROGRAM checked (x86-64 ELF, dynamically linked), started with
    |  LD_PRELOAD=libcodeisland-agent.so (smm/native: the engine inside the process)
    v
ProcessTransport   /proc/PID/mem is "physical memory", kill(PID, signal) the SW SMI,
    |              the mailbox found in /proc/PID/maps (memfd "codeisland-mailbox")
    v
run.NativeRun      SIGPROF samples (the engine's SAMPLE) -> per-island counts per window
                   -> a policy's prediction -> the relocation layer's planner and
                   Relocator (STAGE..COMMIT while the program runs) -> NativeReport
"""
