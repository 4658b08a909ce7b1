"""The closed loop: monitor -> predict -> plan -> stage/commit -> measure -> keep/move/roll back."""
