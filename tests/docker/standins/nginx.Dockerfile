# A stand-in for nginx:1.27-alpine from Debian's nginx-light: the configuration at /etc/nginx/nginx.conf, in the
# foreground.
FROM local/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends nginx-light && rm -rf /var/lib/apt/lists/*
CMD ["nginx", "-g", "daemon off;"]
