# Overrides for hosts in the production group (VPSKIT_GROUP=production, the default). Example values:
# uncomment and adapt; anything not set here comes from group_data/all.py.

# domain = "cms.example.com"
# proxy_network = "traefik"
# traefik_labels = True
# app_memory_limit = "768m"
health_timeout = 240  # a cold start on a 1 CPU VPS can take a while: give it four minutes
