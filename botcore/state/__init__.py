"""A conversation's state and what happens in it: the stored address and dialog stack, the turn that
reads, computes and commits them, and the dialogs themselves."""
