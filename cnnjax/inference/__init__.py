"""Using a trained run: restore its checkpoint, evaluate, predict, export."""
