"""Rules: the segment language, and the traits, scores, tags, segments and content it computes."""
