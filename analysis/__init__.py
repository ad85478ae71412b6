"""What the warehouse computes from the readings: averages with completeness, VN_AQI, QCVN exceedances, alerts."""
