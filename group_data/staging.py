# Overrides for hosts in the staging group (VPSKIT_GROUP=staging). A staging server is often smaller
# and shared, so keep the app lighter and on another port.

app_name = "example-staging"  # a separate compose project, image and folder
publish_port = 3001  # so it can sit next to production on one server
app_memory_limit = "512m"  # staging gets less memory
keep_images = 2  # fewer rollback images
