"""smmemu: a Unicorn machine that runs the real codeisland SMM driver in emulated SMM."""
