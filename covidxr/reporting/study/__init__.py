"""The study page: one offline ``report.html`` (and ``report.json``) a reviewer reads, every
section computed from the runs' own records, and the CLAIM 2024 / TRIPOD+AI checklists that say
where each item's evidence is.

``evidence`` reads the runs; ``clinical`` and ``subgroups`` hold the formulas; ``markup`` what a
section is made of; ``data_sections``, ``performance``, ``validity``, ``failures`` and
``model_card`` build the sections; ``figures`` draws them; ``checklists`` holds the items;
``page`` writes the files.
"""
