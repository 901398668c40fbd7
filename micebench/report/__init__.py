"""Paper-style reports: effectiveness tables with significance, efficiency table, plots, an HTML page."""
