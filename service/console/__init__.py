"""The staff console: server-rendered pages under /console for support agents, finance, partner
cashiers and admins, over the same domain functions the API calls."""
