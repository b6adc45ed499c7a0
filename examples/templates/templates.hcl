# cairn template -config examples/templates/templates.hcl
consul {
  address = "127.0.0.1:8500"
}

template {
  source      = "examples/templates/nginx.ctmpl"
  destination = "/etc/nginx/conf.d/web.conf"
  command     = "nginx -s reload"
  perms       = 0644
  wait {
    min = "2s"
    max = "10s"
  }
}

template {
  source      = "examples/templates/file_sd.ctmpl"
  destination = "/etc/prometheus/targets/cairn.json"
}
