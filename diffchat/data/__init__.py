"""Data for DiffChat: the mini-world generator, loaders of real sources, teachers (section 3.1)."""
