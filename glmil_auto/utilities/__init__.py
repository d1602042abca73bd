"""Small helpers shared by every pipeline stage."""
