"""WorldReel model side: geometry-motion augmented CogVideoX DiT, temporal DPT head, losses."""
