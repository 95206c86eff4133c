"""Universal gift cards: minted by us, exchanged by partners for their certificates."""
