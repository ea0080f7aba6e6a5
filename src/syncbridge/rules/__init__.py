"""Rules: the segment language now; traits, behaviour tags and content rules build on it."""
