"""Budget and stock as balances: what a program has spent this month, and the low-budget and
low-stock events, sent once per threshold crossing."""
