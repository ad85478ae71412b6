"""quantrac: edge_agent."""
