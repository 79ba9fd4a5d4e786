"""`agvas check`: a whole-system run at a preset's real size (build, train step, checkpoint, inference)."""
