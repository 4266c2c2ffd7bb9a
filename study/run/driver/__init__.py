"""The driver: a study from spec to result (`engine`), its tune and confirm phases, the confirm
phase as rounds, and the preflight that runs before Ray does."""
