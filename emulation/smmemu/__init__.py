"""smmemu: the emulated board -- a Unicorn machine that runs the real codeisland SMM driver in
emulated SMM: memory, SMRAM, firmware services, devices, guest threads, and the board's
`EmulatorTransport`.  It knows nothing of analysis, planning or the loop: hosts boot it with
`codeisland.emulator.boot()` and drive it through the relocation layer.
emulation/README.md describes the machine, the guest workloads and the API.
"""
