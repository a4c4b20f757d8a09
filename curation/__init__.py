"""All of counteranimal's logic as plain functions on plain data (no Beam, no Label Studio, no network)."""
