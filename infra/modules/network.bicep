// VNet with two subnets: one delegated to the Container Apps environment, one for private endpoints.
// The private-endpoint subnet has an NSG and private-endpoint network policies enabled, so NSG rules
// apply to traffic towards Redis: that NSG is where the `azure` network fault backend writes its
// `chaos-*` deny rules (and the only NSG the app identity may change, see permissions.bicep).
//
// Re-provisioning (`azd provision`) puts the NSG back to the rules declared here: any `chaos-*` rule
// left behind is removed, so do not re-provision during a run.

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Suffix that makes resource names unique.')
param resourceToken string

@description('Address space of the VNet.')
param vnetAddressPrefix string = '10.0.0.0/16'

@description('Subnet of the Container Apps environment (workload profiles: /27 or larger, delegated).')
param containerAppsSubnetPrefix string = '10.0.1.0/24'

@description('Subnet of the private endpoints (Redis).')
param privateEndpointSubnetPrefix string = '10.0.2.0/24'

resource privateEndpointNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-pe-${resourceToken}'
  location: location
  tags: tags
  properties: {
    // No rule of our own: the default rules allow VNet-to-VNet traffic, so the app reaches Redis
    // until a chaos deny rule (priority 100, port 10000) says otherwise.
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: 'vnet-${resourceToken}'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        vnetAddressPrefix
      ]
    }
    // Subnets declared inline so that a re-deployment does not try to delete and recreate them.
    subnets: [
      {
        name: 'snet-containerapps'
        properties: {
          addressPrefix: containerAppsSubnetPrefix
          delegations: [
            {
              name: 'Microsoft.App.environments'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'snet-private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: privateEndpointNsg.id
          }
          // Without this, NSG rules are not evaluated for traffic to private endpoints.
          privateEndpointNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

resource redisPrivateDnsZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: 'privatelink.redis.azure.net'
  location: 'global'
  tags: tags
}

resource redisPrivateDnsZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: redisPrivateDnsZone
  name: 'link-${vnet.name}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

output vnetName string = vnet.name
output containerAppsSubnetId string = vnet.properties.subnets[0].id
output privateEndpointSubnetId string = vnet.properties.subnets[1].id
output privateEndpointNsgName string = privateEndpointNsg.name
output redisPrivateDnsZoneId string = redisPrivateDnsZone.id
