"""smmemu: a Unicorn machine that runs the real codeisland SMM driver in emulated SMM.

Start with `smmemu.session.boot()`; emulation/README.md describes the machine, the guest
workloads and the API other parts use (the Unicorn handle `machine.uc`, extra I/O ports,
`Guest.run`/`run_sliced` with callbacks between slices, the transport and mailbox client).
"""
