"""The main job: bring the stack up and prove each hop works (grows into the full demo)."""
