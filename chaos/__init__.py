"""The lab's controller: local stack, chaos verbs, herds, scenarios and reports."""
