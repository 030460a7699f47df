"""The report: every experiment run (or reused) and written up as one HTML folder and a PDF.

``build.py`` orchestrates; ``section.py`` is the interface each section implements (one module
per section in ``sections/``); ``browser.py`` drives headless Chromium (PDF, page checks).
"""
