def install(app, settings) -> None:
    pass
