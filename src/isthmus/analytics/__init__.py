"""Analytics: alarms, KPIs, SPC and predictive maintenance (pure cores, I/O at their edges)."""
