"""The glue: options (one table), the twistd plugin's service maker, reload, logging."""
