_instruments = ("jupyterhub >= 5, < 7",)
_supports_metrics = True
