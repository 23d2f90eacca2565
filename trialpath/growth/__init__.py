"""Growth: KPIs, statistics and charts, experiments' discovery, exports, and the synthetic
population and simulation."""
