"""The Linux guest of `codeisland qemu run --guest linux`: Debian's kernel (fetched by
scripts/bootstrap.sh into a cache), an initramfs built here from busybox-static and our guest
agent (guest/linux/agent.c), the agent's control block, and the boot with its failure causes.
"""
