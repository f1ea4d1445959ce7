"""wan-shapes: a synthetic text-to-video data set, the small Wan model trained on it, and the
quality gate that judges any pipeline's output by what it drew."""
